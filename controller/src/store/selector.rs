//! Label and field selectors with Kubernetes' syntax and semantics.
//!
//! Label selectors (`labelSelector=`): `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`,
//! `!a`, `a>1`, `a<1`, comma-separated requirements that must all hold, whitespace tolerated
//! around tokens. Keys and values are validated as Kubernetes validates them, so a selector that
//! Kubernetes refuses is refused here too. `!=` and `notin` match objects without the label, as in
//! Kubernetes.
//!
//! Field selectors (`fieldSelector=`): `field=value`, `field==value`, `field!=value`, comma = AND,
//! `\,` `\=` `\\` escapes in values; only `metadata.name` and `metadata.namespace` are supported
//! (every other field is refused with an error naming the supported ones).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A selector that could not be parsed; the message names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The label selector's syntax is wrong (unexpected token, missing value, unclosed set, …).
    #[error("{message} in label selector at position {position}")]
    LabelSyntax {
        /// What was expected or found.
        message: String,
        /// Byte offset in the selector where the problem was found.
        position: usize,
    },
    /// A label key is not a valid qualified name (`[prefix/]name`).
    #[error(
        "invalid label key {key:?}: {reason}; a key is an optional DNS subdomain prefix and '/', then a name of \
         at most 63 characters of [A-Za-z0-9-_.] starting and ending with an alphanumeric character"
    )]
    LabelKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A label value is not valid.
    #[error(
        "invalid label value {value:?} for key {key:?}: a value is empty or at most 63 characters of \
         [A-Za-z0-9-_.] starting and ending with an alphanumeric character"
    )]
    LabelValue {
        /// The key the value belongs to.
        key: String,
        /// The value.
        value: String,
    },
    /// `in`/`notin` with an empty set, or `>`/`<` with a non-integer value.
    #[error("invalid requirement on label {key:?}: {reason}")]
    LabelRequirement {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A field selector term is not `field=value`, `field==value` or `field!=value`.
    #[error("invalid field selector term {term:?}: expected field=value, field==value or field!=value")]
    FieldSyntax {
        /// The term.
        term: String,
    },
    /// A field selector names a field that is not supported.
    #[error("field label not supported: {field}; berth supports metadata.name and metadata.namespace")]
    FieldNotSupported {
        /// The field.
        field: String,
    },
}

/// The operator of one label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelOp {
    /// `key=value`, `key==value`, `key in (…)`.
    In(BTreeSet<String>),
    /// `key!=value`, `key notin (…)`.
    NotIn(BTreeSet<String>),
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>n`.
    GreaterThan(i64),
    /// `key<n`.
    LessThan(i64),
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: LabelOp,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            LabelOp::In(set) => value.is_some_and(|v| set.contains(v)),
            LabelOp::NotIn(set) => value.is_none_or(|v| !set.contains(v)),
            LabelOp::Exists => value.is_some(),
            LabelOp::DoesNotExist => value.is_none(),
            LabelOp::GreaterThan(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
            LabelOp::LessThan(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
        match &self.op {
            LabelOp::In(s) if s.len() == 1 => write!(f, "{}={}", self.key, join(s)),
            LabelOp::In(s) => write!(f, "{} in ({})", self.key, join(s)),
            LabelOp::NotIn(s) if s.len() == 1 => write!(f, "{}!={}", self.key, join(s)),
            LabelOp::NotIn(s) => write!(f, "{} notin ({})", self.key, join(s)),
            LabelOp::Exists => write!(f, "{}", self.key),
            LabelOp::DoesNotExist => write!(f, "!{}", self.key),
            LabelOp::GreaterThan(n) => write!(f, "{}>{n}", self.key),
            LabelOp::LessThan(n) => write!(f, "{}<{n}", self.key),
        }
    }
}

/// A parsed label selector: every requirement must hold. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// A token of the label selector language.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    In,
    NotInKw,
    Open,
    Close,
    Comma,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("{s:?}"),
            Token::Not => "'!'".into(),
            Token::Eq => "'='".into(),
            Token::DoubleEq => "'=='".into(),
            Token::NotEq => "'!='".into(),
            Token::Gt => "'>'".into(),
            Token::Lt => "'<'".into(),
            Token::In => "'in'".into(),
            Token::NotInKw => "'notin'".into(),
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::Comma => "','".into(),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '>' | '<' | '(' | ')' | ',')
}

/// Splits a label selector into tokens with their byte positions.
fn lex(input: &str) -> Vec<(Token, usize)> {
    let mut out = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(pos, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if is_special(c) {
            chars.next();
            let next = chars.peek().map(|&(_, n)| n);
            let tok = match (c, next) {
                ('!', Some('=')) => {
                    chars.next();
                    Token::NotEq
                }
                ('=', Some('=')) => {
                    chars.next();
                    Token::DoubleEq
                }
                ('!', _) => Token::Not,
                ('=', _) => Token::Eq,
                ('>', _) => Token::Gt,
                ('<', _) => Token::Lt,
                ('(', _) => Token::Open,
                (')', _) => Token::Close,
                _ => Token::Comma,
            };
            out.push((tok, pos));
            continue;
        }
        let mut word = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c.is_whitespace() || is_special(c) {
                break;
            }
            word.push(c);
            chars.next();
        }
        let tok = match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotInKw,
            _ => Token::Ident(word),
        };
        out.push((tok, pos));
    }
    out
}

struct Parser<'a> {
    tokens: Vec<(Token, usize)>,
    at: usize,
    input: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.at).map(|&(_, p)| p).unwrap_or(self.input.len())
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).map(|(t, _)| t.clone());
        self.at += 1;
        t
    }

    fn syntax(&self, message: impl Into<String>) -> SelectorError {
        SelectorError::LabelSyntax { message: message.into(), position: self.position() }
    }

    fn found(&self) -> String {
        self.peek().map(Token::describe).unwrap_or_else(|| "the end".into())
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek() == Some(&Token::Not) {
            self.next();
            let key = self.key()?;
            return Ok(Requirement { key, op: LabelOp::DoesNotExist });
        }
        let key = self.key()?;
        let op = match self.peek() {
            None | Some(Token::Comma) => return Ok(Requirement { key, op: LabelOp::Exists }),
            Some(Token::Eq | Token::DoubleEq) => {
                self.next();
                let v = self.single_value(&key)?;
                LabelOp::In([v].into())
            }
            Some(Token::NotEq) => {
                self.next();
                let v = self.single_value(&key)?;
                LabelOp::NotIn([v].into())
            }
            Some(Token::In) => {
                self.next();
                LabelOp::In(self.value_set(&key)?)
            }
            Some(Token::NotInKw) => {
                self.next();
                LabelOp::NotIn(self.value_set(&key)?)
            }
            Some(t @ (Token::Gt | Token::Lt)) => {
                let greater = *t == Token::Gt;
                self.next();
                let v = self.single_value(&key)?;
                let n = v.parse::<i64>().map_err(|_| SelectorError::LabelRequirement {
                    key: key.clone(),
                    reason: format!("'>' and '<' need an integer value, found {v:?}"),
                })?;
                if greater { LabelOp::GreaterThan(n) } else { LabelOp::LessThan(n) }
            }
            Some(_) => {
                return Err(self.syntax(format!(
                    "expected '=', '==', '!=', 'in', 'notin', '>', '<' or ',' after {key:?}, found {}",
                    self.found()
                )));
            }
        };
        Ok(Requirement { key, op })
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            Some(Token::Ident(_)) => {
                let Some(Token::Ident(k)) = self.next() else { unreachable!("peeked an identifier") };
                validate_key(&k)?;
                Ok(k)
            }
            // `in` and `notin` are keywords only where an operator is expected; as keys they are
            // plain names, as in Kubernetes.
            Some(Token::In) => {
                self.next();
                Ok("in".into())
            }
            Some(Token::NotInKw) => {
                self.next();
                Ok("notin".into())
            }
            _ => Err(self.syntax(format!("expected a label key, found {}", self.found()))),
        }
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; may be empty (`a=` selects `a: ""`).
    fn single_value(&mut self, key: &str) -> Result<String, SelectorError> {
        let v = match self.peek() {
            None | Some(Token::Comma) => String::new(),
            Some(Token::Ident(_)) => {
                let Some(Token::Ident(v)) = self.next() else { unreachable!("peeked an identifier") };
                v
            }
            Some(Token::In) => {
                self.next();
                "in".into()
            }
            Some(Token::NotInKw) => {
                self.next();
                "notin".into()
            }
            Some(_) => return Err(self.syntax(format!("expected a value for {key:?}, found {}", self.found()))),
        };
        validate_value(key, &v)?;
        Ok(v)
    }

    /// `( v1, v2, … )`.
    fn value_set(&mut self, key: &str) -> Result<BTreeSet<String>, SelectorError> {
        if self.next() != Some(Token::Open) {
            self.at -= 1;
            return Err(self.syntax(format!("expected '(' after 'in'/'notin' for {key:?}, found {}", self.found())));
        }
        let mut set = BTreeSet::new();
        let mut expect_value = true;
        loop {
            match self.next() {
                Some(Token::Close) => {
                    if expect_value && !set.is_empty() {
                        // `(a,)`: a trailing empty value, as Kubernetes reads it.
                        set.insert(String::new());
                    }
                    break;
                }
                Some(Token::Comma) => {
                    if expect_value {
                        set.insert(String::new());
                    }
                    expect_value = true;
                }
                Some(Token::Ident(v)) if expect_value => {
                    validate_value(key, &v)?;
                    set.insert(v);
                    expect_value = false;
                }
                Some(Token::In) if expect_value => {
                    set.insert("in".into());
                    expect_value = false;
                }
                Some(Token::NotInKw) if expect_value => {
                    set.insert("notin".into());
                    expect_value = false;
                }
                None => {
                    return Err(SelectorError::LabelSyntax {
                        message: format!("unclosed value set for {key:?}: expected ')'"),
                        position: self.input.len(),
                    });
                }
                Some(t) => {
                    self.at -= 1;
                    return Err(self.syntax(format!(
                        "expected a value, ',' or ')' in the set of {key:?}, found {}",
                        t.describe()
                    )));
                }
            }
        }
        if set.is_empty() {
            return Err(SelectorError::LabelRequirement {
                key: key.to_string(),
                reason: "for 'in' and 'notin' the set of values must not be empty".into(),
            });
        }
        Ok(set)
    }
}

/// Whether `s` is a DNS-1123 label-ish name part: alphanumeric at both ends, `[-_.A-Za-z0-9]`.
fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `s` is a DNS-1123 subdomain (lowercase labels separated by dots, at most 253 bytes).
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

fn validate_key(key: &str) -> Result<(), SelectorError> {
    let bad = |reason: &str| SelectorError::LabelKey { key: key.to_string(), reason: reason.to_string() };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Err(bad("the prefix must be a lowercase DNS subdomain"));
    }
    if !is_label_name(name) {
        return Err(bad("the name part is not valid"));
    }
    Ok(())
}

fn validate_value(key: &str, value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(SelectorError::LabelValue { key: key.to_string(), value: value.to_string() })
    }
}

impl LabelSelector {
    /// Parses Kubernetes label selector syntax. An empty (or all-whitespace) string selects
    /// everything.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut p = Parser { tokens: lex(input), at: 0, input };
        let mut requirements = Vec::new();
        if p.peek().is_none() {
            return Ok(Self { requirements });
        }
        loop {
            requirements.push(p.requirement()?);
            match p.next() {
                None => break,
                Some(Token::Comma) if p.peek().is_some() => {}
                Some(Token::Comma) => return Err(p.syntax("expected a requirement after ','")),
                Some(t) => {
                    p.at -= 1;
                    return Err(p.syntax(format!("expected ',' between requirements, found {}", t.describe())));
                }
            }
        }
        Ok(Self { requirements })
    }

    /// Whether every requirement holds for these labels.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// A field a field selector may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: Field,
    equal: bool,
    value: String,
}

/// A parsed field selector: every term must hold. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// Splits on a separator not preceded by a backslash, keeping escapes in the pieces.
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Finds the first unescaped operator of a term: `!=`, `==` or `=`.
fn split_operator(term: &str) -> Option<(&str, &str, &str)> {
    let mut escaped = false;
    let bytes = term.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' => escaped = true,
            b'!' if bytes.get(i + 1) == Some(&b'=') => return Some((&term[..i], "!=", &term[i + 2..])),
            b'=' if bytes.get(i + 1) == Some(&b'=') => return Some((&term[..i], "==", &term[i + 2..])),
            b'=' => return Some((&term[..i], "=", &term[i + 1..])),
            _ => {}
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

impl FieldSelector {
    /// Parses a field selector. An empty (or all-whitespace) string selects everything.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        if input.trim().is_empty() {
            return Ok(Self { terms });
        }
        for raw in split_unescaped(input, ',') {
            let term = raw.trim();
            let Some((field, op, value)) = split_operator(term) else {
                return Err(SelectorError::FieldSyntax { term: term.to_string() });
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                "" => return Err(SelectorError::FieldSyntax { term: term.to_string() }),
                other => return Err(SelectorError::FieldNotSupported { field: other.to_string() }),
            };
            terms.push(FieldTerm { field, equal: op != "!=", value: unescape(value.trim()) });
        }
        Ok(Self { terms })
    }

    /// Whether every term holds for an object with this namespace (empty when cluster-scoped)
    /// and name.
    pub fn matches(&self, namespace: &str, name: &str) -> bool {
        self.terms.iter().all(|t| {
            let actual = match t.field {
                Field::Name => name,
                Field::Namespace => namespace,
            };
            (actual == t.value) == t.equal
        })
    }

    /// The single name this selector pins (`metadata.name=x`), if any: lets a list or watch
    /// look up one object instead of scanning.
    pub fn exact_name(&self) -> Option<&str> {
        self.terms.iter().find(|t| t.field == Field::Name && t.equal).map(|t| t.value.as_str())
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// (selector, labels, expected match)
    #[test]
    fn label_selectors_match_like_kubernetes() {
        let app_web = labels(&[("app", "web"), ("tier", "front")]);
        let app_db = labels(&[("app", "db")]);
        let none = labels(&[]);
        let cases: &[(&str, &BTreeMap<String, String>, bool)] = &[
            ("", &app_web, true),
            ("   ", &none, true),
            ("app=web", &app_web, true),
            ("app=web", &app_db, false),
            ("app==web", &app_web, true),
            ("app = web", &app_web, true),
            ("app!=web", &app_web, false),
            ("app!=web", &app_db, true),
            ("app!=web", &none, true),
            ("app in (web,db)", &app_db, true),
            ("app in ( web , db )", &app_web, true),
            ("app in (x)", &app_web, false),
            ("app in (web)", &none, false),
            ("app notin (web)", &app_web, false),
            ("app notin (web)", &app_db, true),
            ("app notin (web)", &none, true),
            ("app", &app_db, true),
            ("app", &none, false),
            ("!app", &none, true),
            ("!app", &app_db, false),
            ("! app", &none, true),
            ("app=web,tier=front", &app_web, true),
            ("app=web,tier=back", &app_web, false),
            ("app=web, !tier", &app_web, false),
            ("app, tier notin (back)", &app_web, true),
            ("tier=", &labels(&[("tier", "")]), true),
            ("tier=", &app_web, false),
            ("berth.dev/owner-name=shop", &labels(&[("berth.dev/owner-name", "shop")]), true),
            ("n>3", &labels(&[("n", "4")]), true),
            ("n>3", &labels(&[("n", "3")]), false),
            ("n<3", &labels(&[("n", "2")]), true),
            ("n<3", &labels(&[("n", "x")]), false),
            ("n<3", &none, false),
        ];
        for (sel, l, want) in cases {
            let parsed = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel:?}: {e}"));
            assert_eq!(parsed.matches(l), *want, "selector {sel:?} on {l:?}");
        }
    }

    #[test]
    fn bad_label_selectors_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("app=web,", "after ','"),
            (",app", "expected a label key"),
            ("app in web", "expected '('"),
            ("app in (web", "unclosed"),
            ("app in ()", "must not be empty"),
            ("app notin ()", "must not be empty"),
            ("app web", "expected '='"),
            ("app=web tier=x", "expected ','"),
            ("app==", ""),
            ("=web", "expected a label key"),
            ("-app=x", "invalid label key"),
            ("Bad_Prefix/app=x", "prefix"),
            ("app=not valid!", "expected ','"),
            ("app=-x", "invalid label value"),
            ("n>x", "integer"),
            ("app in (a b)", "expected a value, ',' or ')'"),
            ("!", "expected a label key"),
            ("app=(x)", "expected a value"),
        ];
        for (sel, want) in cases {
            match LabelSelector::parse(sel) {
                Err(e) => assert!(e.to_string().contains(want), "{sel:?}: {e} does not mention {want:?}"),
                Ok(s) => assert!(want.is_empty(), "{sel:?} parsed as {s:?}, expected an error mentioning {want:?}"),
            }
        }
        let long = format!("app={}", "x".repeat(64));
        assert!(matches!(LabelSelector::parse(&long), Err(SelectorError::LabelValue { .. })));
    }

    #[test]
    fn label_selectors_print_back_in_canonical_form() {
        let s = LabelSelector::parse("app == web , tier in (b,a), !x, y notin (z)").unwrap();
        assert_eq!(s.to_string(), "app=web,tier in (a,b),!x,y!=z");
        assert_eq!(LabelSelector::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn field_selectors_support_name_and_namespace() {
        let cases: &[(&str, &str, &str, bool)] = &[
            ("", "ns", "a", true),
            ("metadata.name=a", "ns", "a", true),
            ("metadata.name=a", "ns", "b", false),
            ("metadata.name==a", "ns", "a", true),
            ("metadata.name!=a", "ns", "a", false),
            ("metadata.name!=a", "ns", "b", true),
            ("metadata.namespace=ns", "ns", "a", true),
            ("metadata.namespace=ns", "other", "a", false),
            ("metadata.namespace=ns,metadata.name=a", "ns", "a", true),
            ("metadata.namespace=ns, metadata.name=b", "ns", "a", false),
            ("metadata.namespace!=kube-system,metadata.name!=b", "ns", "a", true),
            ("metadata.namespace=", "", "host-1", true),
            ("metadata.name=a\\,b", "ns", "a,b", true),
            ("metadata.name=a\\=b", "ns", "a=b", true),
        ];
        for (sel, ns, name, want) in cases {
            let parsed = FieldSelector::parse(sel).unwrap_or_else(|e| panic!("{sel:?}: {e}"));
            assert_eq!(parsed.matches(ns, name), *want, "selector {sel:?} on {ns}/{name}");
        }
        assert_eq!(FieldSelector::parse("metadata.name=a").unwrap().exact_name(), Some("a"));
        assert_eq!(FieldSelector::parse("metadata.name!=a").unwrap().exact_name(), None);
    }

    #[test]
    fn bad_field_selectors_are_refused_naming_the_supported_fields() {
        let e = FieldSelector::parse("spec.suspend=true").unwrap_err();
        assert_eq!(e, SelectorError::FieldNotSupported { field: "spec.suspend".into() });
        assert!(e.to_string().contains("metadata.name and metadata.namespace"), "{e}");
        assert!(matches!(FieldSelector::parse("metadata.name"), Err(SelectorError::FieldSyntax { .. })));
        assert!(matches!(FieldSelector::parse("=x"), Err(SelectorError::FieldSyntax { .. })));
        assert!(matches!(
            FieldSelector::parse("metadata.name=a,status.phase=Ready"),
            Err(SelectorError::FieldNotSupported { .. })
        ));
    }
}
