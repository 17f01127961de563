//! How the guard reads Rust source: a small lexer, not a parser.
//!
//! It blanks comments and string/char literals (so a doc comment or an error message that
//! mentions `axum::` or `SqliteStore` is not a use of it), cuts out test items (a
//! `#[cfg(test)]` and the item after it, to its `;` or its closing brace), and turns what
//! is left into tokens and the paths they name (`use` groups expanded, nested braces
//! too). It does not expand macros, resolve glob imports or follow `#[path]`: what a
//! macro generates or a glob brings in is invisible to every rule.

/// A token of the code that is left once comments, literals and test items are gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    /// Any other punctuation, one character at a time.
    Punct(char),
    /// A number (its text is never needed).
    Number,
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
}

/// A path as written in the code: `crate::a::b`, or one leaf of a `use` group
/// (`use crate::{a::b, c}` names `crate::a::b` and `crate::c`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PathRef {
    pub segments: Vec<String>,
    /// Where its last segment is (a long `use` group spans lines).
    pub line: usize,
    /// The inline modules (`mod name { … }`) it sits in, outermost first.
    pub inline: Vec<String>,
    /// When it is a leaf of a `use` item: what that import binds, and how visibly.
    pub import: Option<Import>,
    /// The tokens of the whole path or `use` tree it is part of (`start..end`), so a rule
    /// can tell which identifiers an import spelled.
    pub span: (usize, usize),
}

/// What one leaf of a `use` item brings into scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Import {
    /// `pub use` or `pub(crate)`/`pub(super)`/`pub(in …)` use: an import others may name
    /// through this module. A plain `use` (or `pub(self)`) is private.
    pub public: bool,
    /// The name it binds: the alias of `… as Y`, else the last segment (`*` for a glob,
    /// `_` for `as _`).
    pub name: String,
}

impl PathRef {
    pub fn text(&self) -> String {
        self.segments.join("::")
    }
}

/// One file as the rules see it.
#[derive(Debug)]
pub(crate) struct Code {
    /// The non-test code's tokens.
    pub tokens: Vec<Token>,
    /// `test_lines[n - 1]`: line `n` is (part of) a test item.
    pub test_lines: Vec<bool>,
    /// `#![cfg(test)]`: the whole file is test code.
    pub whole_file_test: bool,
    /// Child modules declared as `#[cfg(test)] mod name;`: their files are test code.
    pub test_mods: Vec<String>,
}

impl Code {
    pub fn read(text: &str) -> Code {
        let chars = blank_comments_and_literals(text);
        let all = tokenize(&chars);
        let lines = text.lines().count().max(1);
        let mut test_lines = vec![false; lines];
        let mut keep = vec![true; all.len()];
        let mut whole_file_test = false;
        let mut test_mods = Vec::new();
        let mut i = 0;
        while i < all.len() {
            if let Some(after) = cfg_test_attr(&all, i, false) {
                let end = item_end(&all, after);
                if let Some(name) = all.get(after..=end).and_then(declared_mod) {
                    test_mods.push(name);
                }
                keep[i..=end.min(all.len() - 1)].fill(false);
                let last = all.get(end).or(all.last()).map_or(1, |t| t.line);
                for line in all[i].line..=last {
                    if let Some(slot) = test_lines.get_mut(line - 1) {
                        *slot = true;
                    }
                }
                i = end + 1;
            } else {
                if cfg_test_attr(&all, i, true).is_some() {
                    whole_file_test = true;
                }
                i += 1;
            }
        }
        let tokens = all.into_iter().zip(keep).filter_map(|(t, k)| k.then_some(t)).collect();
        Code { tokens, test_lines, whole_file_test, test_mods }
    }

    /// Lines that are not test code (comments and blank lines count: they are the file's
    /// length as a reader sees it).
    pub fn non_test_lines(&self) -> usize {
        if self.whole_file_test { 0 } else { self.test_lines.iter().filter(|t| !**t).count() }
    }

    /// Every path the non-test code names, `use` groups expanded.
    pub fn paths(&self) -> Vec<PathRef> {
        paths(&self.tokens)
    }

    pub fn idents(&self) -> impl Iterator<Item = (&str, usize)> {
        self.tokens.iter().filter_map(|t| match &t.tok {
            Tok::Ident(s) => Some((s.as_str(), t.line)),
            _ => None,
        })
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The source with comments and string/char literals replaced by spaces, newlines kept
/// (so line numbers stay true). Lifetimes (`'a`) are left alone.
pub(crate) fn blank_comments_and_literals(src: &str) -> Vec<char> {
    let c: Vec<char> = src.chars().collect();
    let n = c.len();
    let mut out = c.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for ch in &mut out[from..to.min(n)] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
    };
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    let mut i = 0;
    while i < n {
        let ch = c[i];
        if ch == '/' && at(i + 1) == '/' {
            let mut j = i;
            while j < n && c[j] != '\n' {
                j += 1;
            }
            blank(&mut out, i, j);
            i = j;
        } else if ch == '/' && at(i + 1) == '*' {
            let (mut j, mut depth) = (i + 2, 1);
            while j < n && depth > 0 {
                if c[j] == '/' && at(j + 1) == '*' {
                    depth += 1;
                    j += 2;
                } else if c[j] == '*' && at(j + 1) == '/' {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if is_ident_char(ch) {
            // A whole word at once, so that a prefix (`b"`, `r#"`, `b'`) is only a prefix
            // at the start of a word.
            let mut j = i;
            while j < n && is_ident_char(c[j]) {
                j += 1;
            }
            let word: String = c[i..j].iter().collect();
            let next = at(j);
            if matches!(word.as_str(), "r" | "br" | "cr") && (next == '"' || next == '#') {
                let mut k = j;
                while at(k) == '#' {
                    k += 1;
                }
                let hashes = k - j;
                if at(k) == '"' {
                    let mut e = k + 1;
                    while e < n && !(c[e] == '"' && (1..=hashes).all(|h| at(e + h) == '#')) {
                        e += 1;
                    }
                    let end = e + 1 + hashes;
                    blank(&mut out, i, end);
                    i = end;
                    continue;
                }
            }
            if matches!(word.as_str(), "b" | "c") && next == '"' {
                let end = string_end(&c, j);
                blank(&mut out, i, end);
                i = end;
            } else if word == "b" && next == '\'' {
                let end = char_end(&c, j).unwrap_or(j + 1);
                blank(&mut out, i, end);
                i = end;
            } else {
                i = j;
            }
        } else if ch == '"' {
            let end = string_end(&c, i);
            blank(&mut out, i, end);
            i = end;
        } else if ch == '\'' {
            match char_end(&c, i) {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => i += 1, // a lifetime or a label
            }
        } else {
            i += 1;
        }
    }
    out
}

/// One past the closing quote of the string opening at `open`.
fn string_end(c: &[char], open: usize) -> usize {
    let mut j = open + 1;
    while j < c.len() {
        match c[j] {
            '\\' => j += 2,
            '"' => return j + 1,
            _ => j += 1,
        }
    }
    c.len()
}

/// One past the closing quote of the char literal opening at `open`, or `None` when the
/// quote starts a lifetime or a label.
fn char_end(c: &[char], open: usize) -> Option<usize> {
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    if at(open + 1) == '\\' {
        let mut j = open + 3; // past the backslash and the escaped character
        while j < c.len() && c[j] != '\'' && c[j] != '\n' {
            j += 1;
        }
        (at(j) == '\'').then_some(j + 1)
    } else if at(open + 2) == '\'' && at(open + 1) != '\n' {
        Some(open + 3)
    } else {
        None
    }
}

pub(crate) fn tokenize(c: &[char]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if is_ident_char(ch) {
            let mut j = i;
            while j < c.len() && is_ident_char(c[j]) {
                j += 1;
            }
            let word: String = c[i..j].iter().collect();
            let word = word.strip_prefix("r#").map(str::to_string).unwrap_or(word);
            let tok = if ch.is_ascii_digit() { Tok::Number } else { Tok::Ident(word) };
            tokens.push(Token { tok, line });
            i = j;
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            tokens.push(Token { tok: Tok::PathSep, line });
            i += 2;
        } else {
            tokens.push(Token { tok: Tok::Punct(ch), line });
            i += 1;
        }
    }
    tokens
}

fn is_punct(t: Option<&Token>, p: char) -> bool {
    matches!(t, Some(Token { tok: Tok::Punct(c), .. }) if *c == p)
}

fn is_ident(t: Option<&Token>, word: &str) -> bool {
    matches!(t, Some(Token { tok: Tok::Ident(w), .. }) if w == word)
}

/// If `#[cfg(test)]` (or, with `inner`, `#![cfg(test)]`) starts at `i`: the index after it.
fn cfg_test_attr(t: &[Token], i: usize, inner: bool) -> Option<usize> {
    if !is_punct(t.get(i), '#') {
        return None;
    }
    let mut k = i + 1;
    if inner {
        if !is_punct(t.get(k), '!') {
            return None;
        }
        k += 1;
    }
    let rest = is_punct(t.get(k), '[')
        && is_ident(t.get(k + 1), "cfg")
        && is_punct(t.get(k + 2), '(')
        && is_ident(t.get(k + 3), "test")
        && is_punct(t.get(k + 4), ')')
        && is_punct(t.get(k + 5), ']');
    rest.then_some(k + 6)
}

/// The index of the last token of the item starting at `start` (further attributes
/// included): its `;`, or the brace that closes its body.
fn item_end(t: &[Token], start: usize) -> usize {
    let (mut round, mut square, mut curly) = (0i32, 0i32, 0i32);
    for (k, token) in t.iter().enumerate().skip(start) {
        match token.tok {
            Tok::Punct('(') => round += 1,
            Tok::Punct(')') => round -= 1,
            Tok::Punct('[') => square += 1,
            Tok::Punct(']') => square -= 1,
            Tok::Punct('{') => curly += 1,
            Tok::Punct('}') => {
                curly -= 1;
                if curly == 0 && round == 0 && square == 0 {
                    return k;
                }
                if curly < 0 {
                    // The enclosing block ended: the attribute was on its last expression.
                    return k.saturating_sub(1);
                }
            }
            Tok::Punct(';') if round == 0 && square == 0 && curly == 0 => return k,
            _ => {}
        }
    }
    t.len().saturating_sub(1)
}

/// `mod name;` (after any visibility and attributes): the module's name.
fn declared_mod(item: &[Token]) -> Option<String> {
    let m = item.iter().position(|t| t.tok == Tok::Ident("mod".into()))?;
    match (item.get(m + 1), item.get(m + 2)) {
        (Some(Token { tok: Tok::Ident(name), .. }), Some(Token { tok: Tok::Punct(';'), .. })) => Some(name.clone()),
        _ => None,
    }
}

/// Every path named in `tokens`. A path starts at an identifier not preceded by `::`
/// (or at a leading `::`) and followed by `::`; a `{ … }` group after `::` is expanded
/// into one path per leaf.
pub(crate) fn paths(tokens: &[Token]) -> Vec<PathRef> {
    let mut out = Vec::new();
    let mut inline: Vec<(String, i32)> = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].tok {
            Tok::Punct('{') => {
                if let (Some(Token { tok: Tok::Ident(name), .. }), true) = (
                    i.checked_sub(1).and_then(|p| tokens.get(p)),
                    is_ident(i.checked_sub(2).and_then(|p| tokens.get(p)), "mod"),
                ) {
                    inline.push((name.clone(), depth));
                }
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                i += 1;
            }
            Tok::Ident(_) | Tok::PathSep if starts_path(tokens, i) => {
                let from = if tokens[i].tok == Tok::PathSep { i + 1 } else { i };
                let names: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
                let visibility = use_visibility(tokens, i);
                let mut found = Vec::new();
                let start = i;
                i = parse_path(tokens, from, Vec::new(), &mut found);
                out.extend(found.into_iter().map(|(segments, line, alias)| {
                    let import = visibility.map(|public| Import {
                        public,
                        name: alias.unwrap_or_else(|| segments.last().cloned().unwrap_or_default()),
                    });
                    PathRef { segments, line, inline: names.clone(), import, span: (start, i) }
                }));
            }
            _ => i += 1,
        }
    }
    out
}

/// If the path starting at token `i` is the tree of a `use` item: whether the item is
/// public (`pub`, `pub(crate)`, `pub(super)`, `pub(in …)`; not `pub(self)`).
fn use_visibility(t: &[Token], i: usize) -> Option<bool> {
    let before = |k: usize| k.checked_sub(1).and_then(|p| t.get(p));
    let u = i.checked_sub(1)?;
    if !is_ident(t.get(u), "use") {
        return None;
    }
    if is_ident(before(u), "pub") {
        return Some(true);
    }
    if !is_punct(before(u), ')') {
        return Some(false);
    }
    // `pub( … )`: back to the opening parenthesis.
    let close = u - 1;
    let open = (0..close).rev().find(|&k| is_punct(t.get(k), '('))?;
    let restricted_to_self = close == open + 2 && is_ident(t.get(open + 1), "self");
    Some(is_ident(before(open), "pub") && !restricted_to_self)
}

fn starts_path(t: &[Token], i: usize) -> bool {
    let prev = i.checked_sub(1).and_then(|p| t.get(p));
    match t[i].tok {
        // A leading `::` (`::std::fs`): not after something it could continue.
        Tok::PathSep => {
            !matches!(prev, Some(Token { tok: Tok::Ident(_) | Tok::Punct('>') | Tok::Punct(')'), .. }))
                && matches!(t.get(i + 1), Some(Token { tok: Tok::Ident(_), .. }))
                && t.get(i + 2).is_some_and(|n| n.tok == Tok::PathSep)
        }
        _ => {
            !matches!(prev, Some(Token { tok: Tok::PathSep, .. }))
                && t.get(i + 1).is_some_and(|n| n.tok == Tok::PathSep)
        }
    }
}

/// A path found, the line of its last segment, and its `as` alias if it has one.
type Found = (Vec<String>, usize, Option<String>);

/// `as name` at `i`: the name.
fn alias_at(t: &[Token], i: usize) -> Option<String> {
    match (t.get(i), t.get(i + 1)) {
        (Some(Token { tok: Tok::Ident(w), .. }), Some(Token { tok: Tok::Ident(name), .. }))
            if w == "as" && t.get(i + 2).is_none_or(|n| n.tok != Tok::PathSep) =>
        {
            Some(name.clone())
        }
        _ => None,
    }
}

/// Parses the path (or `use` tree) at `i` after `prefix`, pushing each complete path (with
/// the line of its last segment and its alias); returns the index after it (and after
/// its `as alias`, if any).
fn parse_path(t: &[Token], mut i: usize, mut prefix: Vec<String>, out: &mut Vec<Found>) -> usize {
    loop {
        match t.get(i).map(|x| &x.tok) {
            Some(Tok::Ident(word)) => {
                prefix.push(word.clone());
                let line = t[i].line;
                i += 1;
                if t.get(i).is_some_and(|x| x.tok == Tok::PathSep) {
                    i += 1;
                    continue;
                }
                // In an expression `crate::MAX as u64` is a cast, not an alias; only an
                // import's alias is ever read.
                let alias = alias_at(t, i);
                let next = if alias.is_some() { i + 2 } else { i };
                out.push((prefix, line, alias));
                return next;
            }
            Some(Tok::Punct('*')) => {
                prefix.push("*".into());
                out.push((prefix, t[i].line, None));
                return i + 1;
            }
            Some(Tok::Punct('{')) => return parse_group(t, i + 1, &prefix, out),
            _ => {
                // `Vec::<u8>` and the like: the path so far is what it names.
                if !prefix.is_empty() {
                    let line = t[i.saturating_sub(1)].line;
                    out.push((prefix, line, None));
                }
                return i;
            }
        }
    }
}

/// The members of a `{ … }` group starting at `i` (after the brace); returns the index
/// after the closing brace.
fn parse_group(t: &[Token], mut i: usize, prefix: &[String], out: &mut Vec<Found>) -> usize {
    loop {
        match t.get(i).map(|x| &x.tok) {
            None => return i,
            Some(Tok::Punct('}')) => return i + 1,
            Some(Tok::Punct(',')) => i += 1,
            Some(Tok::Ident(w)) if w == "self" => {
                // `use a::{self}` (or `self as b`) names `a` itself.
                let alias = alias_at(t, i + 1);
                if !prefix.is_empty() {
                    out.push((prefix.to_vec(), t[i].line, alias.clone()));
                }
                i += if alias.is_some() { 3 } else { 1 };
            }
            Some(Tok::Ident(_) | Tok::Punct('*') | Tok::Punct('{')) => i = parse_path(t, i, prefix.to_vec(), out),
            Some(_) => i += 1,
        }
    }
}
