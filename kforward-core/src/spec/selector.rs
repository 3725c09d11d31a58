//! Kubernetes label selectors (`app=web,tier in (a,b),!legacy`): parsing, canonical text and matching.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use super::SpecError;
use super::name::{check_label_key, check_label_value};

/// One clause of a [`LabelSelector`].
///
/// # Example
///
/// ```
/// use std::collections::BTreeMap;
/// use kforward_core::spec::Requirement;
///
/// let r = Requirement::Equals { key: "app".into(), value: "web".into() };
/// assert_eq!(r.key(), "app");
/// assert_eq!(r.to_string(), "app=web");
/// assert!(r.matches(&BTreeMap::from([("app".to_string(), "web".to_string())])));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// `key=value` or `key==value`: the label is present with this value.
    Equals {
        /// The label key.
        key: String,
        /// The value it must have.
        value: String,
    },
    /// `key!=value`: the label is absent or has another value.
    NotEquals {
        /// The label key.
        key: String,
        /// The value it must not have.
        value: String,
    },
    /// `key in (a,b)`: the label is present with one of these values.
    In {
        /// The label key.
        key: String,
        /// The accepted values (never empty when parsed).
        values: BTreeSet<String>,
    },
    /// `key notin (a,b)`: the label is absent or has none of these values.
    NotIn {
        /// The label key.
        key: String,
        /// The refused values (never empty when parsed).
        values: BTreeSet<String>,
    },
    /// `key`: the label is present, with any value.
    Exists {
        /// The label key.
        key: String,
    },
    /// `!key`: the label is absent.
    DoesNotExist {
        /// The label key.
        key: String,
    },
}

impl Requirement {
    /// The label key this requirement is about.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::Requirement;
    ///
    /// assert_eq!(Requirement::DoesNotExist { key: "legacy".into() }.key(), "legacy");
    /// ```
    pub fn key(&self) -> &str {
        match self {
            Requirement::Equals { key, .. }
            | Requirement::NotEquals { key, .. }
            | Requirement::In { key, .. }
            | Requirement::NotIn { key, .. }
            | Requirement::Exists { key }
            | Requirement::DoesNotExist { key } => key,
        }
    }

    /// Whether a set of labels satisfies this requirement, with Kubernetes' semantics: `!=`
    /// and `notin` also match objects that lack the label.
    ///
    /// # Example
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use kforward_core::spec::Requirement;
    ///
    /// let r = Requirement::NotEquals { key: "tier".into(), value: "db".into() };
    /// assert!(r.matches(&BTreeMap::new()));
    /// ```
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let found = labels.get(self.key());
        match self {
            Requirement::Equals { value, .. } => found == Some(value),
            Requirement::NotEquals { value, .. } => found != Some(value),
            Requirement::In { values, .. } => found.is_some_and(|v| values.contains(v)),
            Requirement::NotIn { values, .. } => !found.is_some_and(|v| values.contains(v)),
            Requirement::Exists { .. } => found.is_some(),
            Requirement::DoesNotExist { .. } => found.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |values: &BTreeSet<String>| {
            values
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Requirement::Equals { key, value } => write!(f, "{key}={value}"),
            Requirement::NotEquals { key, value } => write!(f, "{key}!={value}"),
            Requirement::In { key, values } => write!(f, "{key} in ({})", join(values)),
            Requirement::NotIn { key, values } => write!(f, "{key} notin ({})", join(values)),
            Requirement::Exists { key } => write!(f, "{key}"),
            Requirement::DoesNotExist { key } => write!(f, "!{key}"),
        }
    }
}

/// A Kubernetes label selector: requirements that must all hold.
///
/// Parses the syntax of `kubectl -l` and the API's `labelSelector` query parameter:
/// `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a)`, `k`, `!k`, separated by commas,
/// with optional whitespace between tokens. Keys and values are checked against the
/// Kubernetes rules. Its [`Display`](fmt::Display) is canonical text the API server accepts
/// (set values sorted, `==` written as `=`), and parses back to an equal selector.
///
/// # Errors
///
/// [`LabelSelector::parse`] returns [`SpecError::InvalidSelector`] for an empty selector, a
/// syntax error, an empty value list, `<`/`>` (unsupported) or an invalid key or value.
///
/// # Example
///
/// ```
/// use std::collections::BTreeMap;
/// use kforward_core::spec::LabelSelector;
///
/// let selector = LabelSelector::parse("app = web, tier in (web,api), !legacy")?;
/// assert_eq!(selector.to_string(), "app=web,tier in (api,web),!legacy");
///
/// let labels = BTreeMap::from([
///     ("app".to_string(), "web".to_string()),
///     ("tier".to_string(), "api".to_string()),
/// ]);
/// assert!(selector.matches(&labels));
/// # Ok::<(), kforward_core::spec::SpecError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses selector text such as `app=web,tier!=db`.
    ///
    /// # Errors
    ///
    /// [`SpecError::InvalidSelector`] naming the selector and what is wrong with it.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::LabelSelector;
    ///
    /// assert!(LabelSelector::parse("app=web").is_ok());
    /// let err = LabelSelector::parse("app in web").unwrap_err();
    /// assert!(err.to_string().contains("expected '(' after \"in\""));
    /// ```
    pub fn parse(selector: &str) -> Result<Self, SpecError> {
        Parser::new(selector)
            .and_then(Parser::selector)
            .map_err(|problem| SpecError::InvalidSelector {
                selector: selector.to_owned(),
                problem,
            })
    }

    /// A selector of equality requirements, one per label, such as a Service's
    /// `spec.selector`. An empty map gives an empty selector, which matches everything.
    ///
    /// # Example
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use kforward_core::spec::LabelSelector;
    ///
    /// let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    /// assert_eq!(LabelSelector::from_labels(&labels).to_string(), "app=web");
    /// ```
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Self {
        let requirements = labels
            .iter()
            .map(|(key, value)| Requirement::Equals {
                key: key.clone(),
                value: value.clone(),
            })
            .collect();
        LabelSelector { requirements }
    }

    /// The requirements, in the order they were written.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::spec::LabelSelector;
    ///
    /// let selector = LabelSelector::parse("app=web,!legacy")?;
    /// assert_eq!(selector.requirements().len(), 2);
    /// # Ok::<(), kforward_core::spec::SpecError>(())
    /// ```
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether a set of labels satisfies every requirement.
    ///
    /// # Example
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use kforward_core::spec::LabelSelector;
    ///
    /// let selector = LabelSelector::parse("app=web,tier notin (db)")?;
    /// let web = BTreeMap::from([("app".to_string(), "web".to_string())]);
    /// let db = BTreeMap::from([
    ///     ("app".to_string(), "web".to_string()),
    ///     ("tier".to_string(), "db".to_string()),
    /// ]);
    /// assert!(selector.matches(&web));
    /// assert!(!selector.matches(&db));
    /// # Ok::<(), kforward_core::spec::SpecError>(())
    /// ```
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

/// kube's typed form of the same selector, which its list and watch parameters and its
/// watcher take.
///
/// # Example
///
/// ```
/// use kforward_core::spec::LabelSelector;
///
/// let selector = LabelSelector::parse("app=web,tier in (web,api),!legacy")?;
/// let kube_selector = kube::core::Selector::from(&selector);
/// assert_eq!(kube_selector.to_string(), selector.to_string());
/// # Ok::<(), kforward_core::spec::SpecError>(())
/// ```
impl From<&LabelSelector> for kube::core::Selector {
    fn from(selector: &LabelSelector) -> Self {
        use kube::core::Expression;
        selector
            .requirements
            .iter()
            .map(|requirement| match requirement.clone() {
                Requirement::Equals { key, value } => Expression::Equal(key, value),
                Requirement::NotEquals { key, value } => Expression::NotEqual(key, value),
                Requirement::In { key, values } => Expression::In(key, values),
                Requirement::NotIn { key, values } => Expression::NotIn(key, values),
                Requirement::Exists { key } => Expression::Exists(key),
                Requirement::DoesNotExist { key } => Expression::DoesNotExist(key),
            })
            .collect()
    }
}

impl FromStr for LabelSelector {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(s)
    }
}

/// A token of selector text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    /// A key, a value or the words `in` / `notin`.
    Word(&'a str),
    /// `!`
    Not,
    /// `=` or `==`
    Eq,
    /// `!=`
    NotEq,
    /// `,`
    Comma,
    /// `(`
    Open,
    /// `)`
    Close,
    /// `<` or `>`, which Kubernetes accepts only for some fields and we refuse.
    Compare(char),
}

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => write!(f, "{w:?}"),
            Token::Not => f.write_str("'!'"),
            Token::Eq => f.write_str("'='"),
            Token::NotEq => f.write_str("'!='"),
            Token::Comma => f.write_str("','"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
            Token::Compare(c) => write!(f, "'{c}'"),
        }
    }
}

/// Splits selector text into tokens.
fn tokenize(text: &str) -> Vec<Token<'_>> {
    let is_special = |c: char| c.is_whitespace() || "!=,()<>".contains(c);
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let (token, len) = match c {
            c if c.is_whitespace() => {
                rest = &rest[c.len_utf8()..];
                continue;
            }
            '!' if rest.starts_with("!=") => (Token::NotEq, 2),
            '!' => (Token::Not, 1),
            '=' if rest.starts_with("==") => (Token::Eq, 2),
            '=' => (Token::Eq, 1),
            ',' => (Token::Comma, 1),
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            '<' | '>' => (Token::Compare(c), 1),
            _ => {
                let len = rest.find(is_special).unwrap_or(rest.len());
                (Token::Word(&rest[..len]), len)
            }
        };
        tokens.push(token);
        rest = &rest[len..];
    }
    tokens
}

/// A recursive-descent parser over the tokens; errors are problem phrases.
struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    next: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Self, String> {
        let tokens = tokenize(text);
        if tokens.is_empty() {
            return Err("is empty; write at least one requirement such as app=web".to_owned());
        }
        Ok(Parser { tokens, next: 0 })
    }

    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.next).copied()
    }

    fn bump(&mut self) -> Option<Token<'a>> {
        let token = self.peek();
        self.next += 1;
        token
    }

    fn found(token: Option<Token<'_>>) -> String {
        token.map_or_else(|| "the end".to_owned(), |t| t.to_string())
    }

    fn selector(mut self) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        loop {
            requirements.push(self.requirement()?);
            match self.bump() {
                None => return Ok(LabelSelector { requirements }),
                Some(Token::Comma) if self.peek().is_none() => {
                    return Err("ends with ','; remove it or add a requirement".to_owned());
                }
                Some(Token::Comma) => {}
                other => {
                    return Err(format!(
                        "expected ',' between requirements, found {}",
                        Self::found(other)
                    ));
                }
            }
        }
    }

    fn key(&mut self) -> Result<String, String> {
        match self.bump() {
            Some(Token::Word(key)) => {
                check_label_key(key).map_err(|p| format!("label key {key:?} {p}"))?;
                Ok(key.to_owned())
            }
            other => Err(format!(
                "expected a label key, found {}",
                Self::found(other)
            )),
        }
    }

    /// The value after `=`, `==` or `!=`; nothing before ',' or the end means "".
    fn value(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(Token::Word(value)) => {
                self.next += 1;
                check_label_value(value).map_err(|p| format!("label value {value:?} {p}"))?;
                Ok(value.to_owned())
            }
            None | Some(Token::Comma) => Ok(String::new()),
            other => Err(format!(
                "expected a label value, found {}",
                Self::found(other)
            )),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(Token::Not) {
            self.next += 1;
            let key = self.key()?;
            return Ok(Requirement::DoesNotExist { key });
        }
        let key = self.key()?;
        match self.peek() {
            None | Some(Token::Comma) => Ok(Requirement::Exists { key }),
            Some(Token::Eq) => {
                self.next += 1;
                let value = self.value()?;
                Ok(Requirement::Equals { key, value })
            }
            Some(Token::NotEq) => {
                self.next += 1;
                let value = self.value()?;
                Ok(Requirement::NotEquals { key, value })
            }
            Some(Token::Word(word @ ("in" | "notin"))) => {
                self.next += 1;
                let values = self.values(word)?;
                Ok(if word == "in" {
                    Requirement::In { key, values }
                } else {
                    Requirement::NotIn { key, values }
                })
            }
            Some(Token::Compare(c)) => Err(format!(
                "the operator '{c}' after {key:?} is not supported; use =, ==, !=, in or notin"
            )),
            other => Err(format!(
                "expected =, ==, !=, in, notin, ',' or the end after {key:?}, found {}",
                Self::found(other)
            )),
        }
    }

    /// `( value, value, ... )` after `in` / `notin`; a missing value between commas is "".
    fn values(&mut self, operator: &str) -> Result<BTreeSet<String>, String> {
        match self.bump() {
            Some(Token::Open) => {}
            other => {
                return Err(format!(
                    "expected '(' after {operator:?}, found {}",
                    Self::found(other)
                ));
            }
        }
        if self.peek() == Some(Token::Close) {
            return Err(format!(
                "has an empty value list after {operator:?}; write at least one value"
            ));
        }
        let mut values = BTreeSet::new();
        loop {
            let value = match self.peek() {
                Some(Token::Comma | Token::Close) => String::new(),
                _ => self.value()?,
            };
            values.insert(value);
            match self.bump() {
                Some(Token::Comma) => {}
                Some(Token::Close) => return Ok(values),
                other => {
                    return Err(format!(
                        "expected ',' or ')' in the value list, found {}",
                        Self::found(other)
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(text: &str) -> LabelSelector {
        LabelSelector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn problem(text: &str) -> String {
        match LabelSelector::parse(text) {
            Err(SpecError::InvalidSelector { selector, problem }) => {
                assert_eq!(selector, text);
                problem
            }
            other => panic!("{text}: expected InvalidSelector, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_operator() {
        let selector = parse("a=1,b==2,c!=3,d in (x,y),e notin (z),f,!g");
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        assert_eq!(
            selector.requirements(),
            [
                Requirement::Equals {
                    key: "a".into(),
                    value: "1".into()
                },
                Requirement::Equals {
                    key: "b".into(),
                    value: "2".into()
                },
                Requirement::NotEquals {
                    key: "c".into(),
                    value: "3".into()
                },
                Requirement::In {
                    key: "d".into(),
                    values: set(&["x", "y"])
                },
                Requirement::NotIn {
                    key: "e".into(),
                    values: set(&["z"])
                },
                Requirement::Exists { key: "f".into() },
                Requirement::DoesNotExist { key: "g".into() },
            ]
        );
    }

    #[test]
    fn whitespace_between_tokens_is_ignored() {
        assert_eq!(
            parse("  app = web ,tier   in(a , b) , ! legacy "),
            parse("app=web,tier in (a,b),!legacy")
        );
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        for (text, canonical) in [
            ("app==web", "app=web"),
            ("tier in (web, api, web)", "tier in (api,web)"),
            ("x notin (b,a)", "x notin (a,b)"),
            (
                "app.kubernetes.io/name=web,!legacy,env",
                "app.kubernetes.io/name=web,!legacy,env",
            ),
            ("k=", "k="),
            ("k!=", "k!="),
        ] {
            let selector = parse(text);
            assert_eq!(selector.to_string(), canonical, "{text}");
            assert_eq!(parse(canonical), selector, "{canonical}");
        }
    }

    #[test]
    fn empty_values_in_a_list_are_kept() {
        let selector = parse("k in (a,)");
        assert_eq!(selector.to_string(), "k in (,a)");
        assert_eq!(parse("k in (,a)"), selector);
        assert!(selector.matches(&labels(&[("k", "")])));
    }

    #[test]
    fn words_in_and_notin_can_be_keys_and_values() {
        assert_eq!(
            parse("in=notin").requirements(),
            [Requirement::Equals {
                key: "in".into(),
                value: "notin".into()
            }]
        );
    }

    #[test]
    fn matching_follows_kubernetes_semantics() {
        let web = labels(&[("app", "web"), ("tier", "frontend")]);
        let bare = labels(&[]);
        for (selector, on_web, on_bare) in [
            ("app=web", true, false),
            ("app=db", false, false),
            ("app!=db", true, true),
            ("app!=web", false, true),
            ("tier in (frontend,backend)", true, false),
            ("tier notin (frontend)", false, true),
            ("tier notin (backend)", true, true),
            ("app", true, false),
            ("!app", false, true),
            ("app=web,tier=frontend", true, false),
            ("app=web,tier=backend", false, false),
        ] {
            let s = parse(selector);
            assert_eq!(s.matches(&web), on_web, "{selector} on web");
            assert_eq!(s.matches(&bare), on_bare, "{selector} on no labels");
        }
    }

    #[test]
    fn from_labels_gives_equality_requirements() {
        let selector = LabelSelector::from_labels(&labels(&[("b", "2"), ("a", "1")]));
        assert_eq!(selector.to_string(), "a=1,b=2");
        assert!(selector.matches(&labels(&[("a", "1"), ("b", "2"), ("c", "3")])));
        assert!(LabelSelector::from_labels(&labels(&[])).matches(&labels(&[("x", "y")])));
    }

    #[test]
    fn syntax_errors_say_what_was_expected() {
        for (text, needle) in [
            ("", "is empty"),
            ("   ", "is empty"),
            ("app=web,", "ends with ','"),
            (",app", "expected a label key, found ','"),
            ("app web", "found \"web\""),
            ("app in web", "expected '(' after \"in\", found \"web\""),
            ("app in ()", "empty value list"),
            ("app in (a b)", "expected ',' or ')'"),
            ("app in (a", "found the end"),
            ("app=(", "expected a label value, found '('"),
            ("replicas>1", "'>'"),
            ("!", "expected a label key, found the end"),
            ("app=web)", "expected ',' between requirements, found ')'"),
        ] {
            let p = problem(text);
            assert!(p.contains(needle), "{text:?}: {p}");
        }
    }

    #[test]
    fn invalid_keys_and_values_are_named() {
        let p = problem("-app=web");
        assert!(p.contains("label key \"-app\""), "{p}");
        let p = problem("app=we b");
        assert!(p.contains("found \"b\""), "{p}");
        let p = problem("app=web/1");
        assert!(p.contains("label value \"web/1\""), "{p}");
        let long = format!("app={}", "v".repeat(64));
        assert!(problem(&long).contains("64 characters"));
    }

    #[test]
    fn error_display_names_the_selector() {
        let err = LabelSelector::parse("app in web").expect_err("bad");
        assert_eq!(
            err.to_string(),
            "invalid label selector \"app in web\": expected '(' after \"in\", found \"web\""
        );
    }

    #[test]
    fn from_str_matches_parse() {
        assert_eq!(
            "app=web".parse::<LabelSelector>(),
            LabelSelector::parse("app=web")
        );
    }

    #[test]
    fn kube_form_has_the_same_text_and_selects_the_same_labels() {
        use kube::core::SelectorExt;
        let label_sets = [
            labels(&[]),
            labels(&[("app", "web")]),
            labels(&[("app", "db"), ("tier", "a")]),
            labels(&[("app", "web"), ("tier", "b"), ("legacy", "1")]),
        ];
        for text in [
            "app=web",
            "app!=web",
            "tier in (b,a)",
            "tier notin (a)",
            "app",
            "!legacy",
            "app==web,tier in (b,a),!legacy",
        ] {
            let ours = parse(text);
            let theirs = kube::core::Selector::from(&ours);
            assert_eq!(theirs.to_string(), ours.to_string(), "{text}");
            for set in &label_sets {
                assert_eq!(theirs.matches(set), ours.matches(set), "{text} on {set:?}");
            }
        }
    }
}
