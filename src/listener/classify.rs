//! Error classification: which handler errors are worth retrying.
//!
//! A [`Classifier`] holds rules, each matching an error type (or a predicate) and saying
//! *retryable* or *not retryable*. Classifying an error walks its [`source`] chain from the
//! outermost error inwards and answers with the first rule that matches any error in the chain;
//! when no rule matches, the default answers (retryable, unless changed with
//! [`Classifier::default_not_retryable`]).
//!
//! By default [`DeserializationFailed`] is not retryable (Spring's `DeserializationException`):
//! retrying cannot turn bad bytes into good ones.
//!
//! ```
//! use rekafka::listener::Classifier;
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("invalid order")]
//! struct InvalidOrder;
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("handling failed")]
//! struct Wrapper(#[source] InvalidOrder);
//!
//! let mut c = Classifier::default();
//! c.add_not_retryable::<InvalidOrder>();
//! // The rule matches the cause of the wrapper.
//! assert!(!c.is_retryable(&Wrapper(InvalidOrder)));
//! assert_eq!(c.remove::<InvalidOrder>(), Some(false));
//! assert!(c.is_retryable(&Wrapper(InvalidOrder)));
//! ```
//!
//! [`source`]: std::error::Error::source

use std::any::TypeId;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// The error a handler gives back: any error, boxed.
pub type HandlerError = Box<dyn StdError + Send + Sync + 'static>;

/// A record's key or value could not be deserialized. Never retried by default: the record goes
/// to the recoverer on its first failure, with its raw bytes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("deserialization of the record's {part} failed: {message}")]
pub struct DeserializationFailed {
    /// Whether the key or the value failed.
    pub part: RecordPart,
    /// What the deserializer said.
    pub message: String,
}

/// The part of a record a failure concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordPart {
    /// The record's key.
    Key,
    /// The record's value.
    Value,
}

impl fmt::Display for RecordPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordPart::Key => "key",
            RecordPart::Value => "value",
        })
    }
}

type Predicate = Arc<dyn Fn(&(dyn StdError + 'static)) -> bool + Send + Sync>;

#[derive(Clone)]
enum Matcher {
    Type(TypeId, &'static str, Predicate),
    Named(String, Predicate),
}

impl Matcher {
    fn of<E: StdError + 'static>() -> Matcher {
        Matcher::Type(
            TypeId::of::<E>(),
            std::any::type_name::<E>(),
            Arc::new(|e| e.is::<E>()),
        )
    }

    fn matches(&self, e: &(dyn StdError + 'static)) -> bool {
        match self {
            Matcher::Type(_, _, p) | Matcher::Named(_, p) => p(e),
        }
    }

    fn name(&self) -> &str {
        match self {
            Matcher::Type(_, n, _) => n,
            Matcher::Named(n, _) => n,
        }
    }
}

/// Decides whether a handler error is retryable (see the [listener module docs](crate::listener)).
#[derive(Clone)]
pub struct Classifier {
    rules: Vec<(Matcher, bool)>,
    default_retryable: bool,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules: Vec<(&str, bool)> = self.rules.iter().map(|(m, r)| (m.name(), *r)).collect();
        f.debug_struct("Classifier")
            .field("rules", &rules)
            .field("default_retryable", &self.default_retryable)
            .finish()
    }
}

impl Default for Classifier {
    /// Retryable by default; [`DeserializationFailed`] is not retryable.
    fn default() -> Self {
        let mut c = Classifier::empty(true);
        c.add_not_retryable::<DeserializationFailed>();
        c
    }
}

impl Classifier {
    /// A classifier with no rules at all, answering `default_retryable` for everything.
    pub fn empty(default_retryable: bool) -> Classifier {
        Classifier {
            rules: Vec::new(),
            default_retryable,
        }
    }

    /// Errors of type `E` (anywhere in the source chain) are not retried: recovered on the
    /// first failure. Replaces an existing rule for `E`.
    pub fn add_not_retryable<E: StdError + 'static>(&mut self) -> &mut Self {
        self.set::<E>(false)
    }

    /// Errors of type `E` are retried under the back-off. Replaces an existing rule for `E`.
    pub fn add_retryable<E: StdError + 'static>(&mut self) -> &mut Self {
        self.set::<E>(true)
    }

    /// Errors for which `predicate` holds are classified `retryable`. `name` identifies the
    /// rule for [`remove_named`](Self::remove_named) and in debug output.
    pub fn add_rule(
        &mut self,
        name: impl Into<String>,
        retryable: bool,
        predicate: impl Fn(&(dyn StdError + 'static)) -> bool + Send + Sync + 'static,
    ) -> &mut Self {
        let name = name.into();
        self.rules
            .retain(|(m, _)| !matches!(m, Matcher::Named(n, _) if *n == name));
        self.rules
            .push((Matcher::Named(name, Arc::new(predicate)), retryable));
        self
    }

    fn set<E: StdError + 'static>(&mut self, retryable: bool) -> &mut Self {
        let id = TypeId::of::<E>();
        if let Some(slot) = self
            .rules
            .iter_mut()
            .find(|(m, _)| matches!(m, Matcher::Type(t, _, _) if *t == id))
        {
            slot.1 = retryable;
        } else {
            self.rules.push((Matcher::of::<E>(), retryable));
        }
        self
    }

    /// Removes the rule for `E`, returning what it said.
    pub fn remove<E: StdError + 'static>(&mut self) -> Option<bool> {
        let id = TypeId::of::<E>();
        let at = self
            .rules
            .iter()
            .position(|(m, _)| matches!(m, Matcher::Type(t, _, _) if *t == id))?;
        Some(self.rules.remove(at).1)
    }

    /// Removes the predicate rule called `name`, returning what it said.
    pub fn remove_named(&mut self, name: &str) -> Option<bool> {
        let at = self
            .rules
            .iter()
            .position(|(m, _)| matches!(m, Matcher::Named(n, _) if n == name))?;
        Some(self.rules.remove(at).1)
    }

    /// Unmatched errors are *not* retryable (Spring's `defaultFalse()`): only errors with a
    /// retryable rule are retried. Existing rules stay.
    pub fn default_not_retryable(&mut self) -> &mut Self {
        self.default_retryable = false;
        self
    }

    /// Whether unmatched errors are retryable.
    pub fn default_retryable(&self) -> bool {
        self.default_retryable
    }

    /// Whether `error` is retryable: the first rule matching the error or any of its sources
    /// (outermost first) answers; otherwise the default.
    pub fn is_retryable(&self, error: &(dyn StdError + 'static)) -> bool {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some((_, retryable)) = self.rules.iter().find(|(m, _)| m.matches(e)) {
                return *retryable;
            }
            current = e.source();
        }
        self.default_retryable
    }
}

/// A name for the kind of an error, used to notice that a record now fails differently
/// (`reset_state_on_exception_change`): the leading identifier of its `Debug` output, which for
/// derived `Debug` is the type name (`InvalidOrder`, `Wrapper(..)` gives `Wrapper`). Errors
/// whose `Debug` output does not start with an identifier (a boxed string) are named by their
/// whole `Debug` output (its first 200 characters).
pub fn error_class(error: &(dyn StdError + 'static)) -> String {
    use std::fmt::Write as _;
    // Formats the `Debug` output only as far as its leading identifier: an error's `Debug`
    // may be long (it may hold the record), and the class is computed for every failure.
    struct Ident {
        out: String,
        done: bool,
    }
    impl std::fmt::Write for Ident {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            if self.done {
                return Err(std::fmt::Error);
            }
            for (i, c) in s.char_indices() {
                if !(c.is_alphanumeric() || c == '_' || c == ':') {
                    self.out.push_str(&s[..i]);
                    self.done = true;
                    return Err(std::fmt::Error);
                }
            }
            self.out.push_str(s);
            Ok(())
        }
    }
    let mut ident = Ident {
        out: String::new(),
        done: false,
    };
    let _ = write!(ident, "{error:?}");
    if !ident.out.is_empty() {
        return ident.out;
    }
    // No leading identifier (a `Debug` starting with a quote, say): the `Debug` itself, cut.
    let debug = format!("{error:?}");
    match debug.char_indices().nth(MAX_CLASS_CHARS) {
        Some((at, _)) => debug[..at].to_owned(),
        None => debug,
    }
}

/// The longest class [`error_class`] returns when the error's `Debug` has no leading
/// identifier.
const MAX_CLASS_CHARS: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("a")]
    struct A;

    #[derive(Debug, thiserror::Error)]
    #[error("b")]
    struct B(#[source] A);

    #[derive(Debug, thiserror::Error)]
    #[error("c")]
    struct C(#[source] B);

    #[test]
    fn default_is_retryable_and_deserialization_is_not() {
        let c = Classifier::default();
        assert!(c.is_retryable(&A));
        let d = DeserializationFailed {
            part: RecordPart::Value,
            message: "bad json".into(),
        };
        assert!(!c.is_retryable(&d));
    }

    #[test]
    fn walks_the_source_chain_outermost_first() {
        let mut c = Classifier::default();
        c.add_not_retryable::<A>();
        assert!(!c.is_retryable(&C(B(A))));
        c.add_retryable::<B>();
        // B is nearer the top than A, so its rule wins.
        assert!(c.is_retryable(&C(B(A))));
        assert_eq!(c.remove::<B>(), Some(true));
        assert!(!c.is_retryable(&C(B(A))));
    }

    #[test]
    fn default_false_retries_only_listed() {
        let mut c = Classifier::default();
        c.default_not_retryable();
        assert!(!c.is_retryable(&A));
        c.add_retryable::<A>();
        assert!(c.is_retryable(&C(B(A))));
    }

    #[test]
    fn replace_and_predicates() {
        let mut c = Classifier::empty(true);
        c.add_not_retryable::<A>();
        c.add_retryable::<A>();
        assert!(c.is_retryable(&A));
        c.add_rule("message says permanent", false, |e| {
            e.to_string().contains('b')
        });
        assert!(!c.is_retryable(&B(A)));
        assert_eq!(c.remove_named("message says permanent"), Some(false));
        assert!(c.is_retryable(&B(A)));
        let boxed: HandlerError = Box::new(C(B(A)));
        assert!(c.is_retryable(boxed.as_ref()));
    }

    #[test]
    fn error_class_names_the_type() {
        assert_eq!(error_class(&C(B(A))), "C");
        assert_eq!(error_class(&A), "A");
        let boxed: HandlerError = "plain text".into();
        assert_eq!(error_class(boxed.as_ref()), "\"plain text\"");
    }

    #[test]
    fn rekafka_errors_classify_by_type() {
        let mut c = Classifier::default();
        c.add_not_retryable::<crate::Error>();
        let e = crate::Error::config("x");
        assert!(!c.is_retryable(&e));
    }
}
