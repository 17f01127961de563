//! Control characters in client text: the rule the HTTP edge enforces on every string
//! it lets through (its `text` layer) and the authorizer on a Basic user name.

/// Whether `s` holds a control character (U+0000–U+001F, U+007F).
pub fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_control())
}

/// Whether `s` holds a control character other than tab, line feed and carriage return,
/// the ones free text (a description) may hold.
pub fn has_control_in_text(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r'))
}
