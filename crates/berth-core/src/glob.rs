//! Glob patterns as Berth uses them (keyless robots' trust rules, immutable tag rules):
//! `*` matches any run of characters, none too; `?` exactly one character; everything
//! else only itself (no classes, no escapes, case-sensitive). Whole-string matches.

/// Whether `text` matches `pattern`: `*` matches any run of characters (none too), `?`
/// exactly one, everything else itself. Linear backtracking to the last `*`.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            (pi, ti) = (pi + 1, ti + 1);
        } else if pi < p.len() && p[pi] == '*' {
            (star, mark, pi) = (Some(pi), ti, pi + 1);
        } else if let Some(s) = star {
            (pi, mark) = (s + 1, mark + 1);
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_star_matches_any_run_and_question_mark_one_character() {
        let cases = [
            ("repo:acme/app:ref:refs/heads/main", "repo:acme/app:ref:refs/heads/main", true),
            ("repo:acme/app:ref:refs/heads/main", "repo:acme/app:ref:refs/heads/mainx", false),
            ("repo:acme/*", "repo:acme/app:ref:refs/heads/main", true),
            ("repo:acme/*", "repo:acme/", true),
            ("repo:acme/*", "repo:acmex/app", false),
            ("*:ref:refs/heads/main", "repo:acme/app:ref:refs/heads/main", true),
            ("*:ref:refs/heads/main", "repo:acme/app:ref:refs/heads/dev", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a*b", "abab", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aééc", false),
            ("a?c", "aéc", true),
            ("**", "", true),
            ("", "", true),
            ("", "x", false),
            ("x", "", false),
            ("acme", "ACME", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob_matches(pattern, text), expected, "{pattern:?} against {text:?}");
        }
    }
}
