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
    /// When the key failed and the value failed too: what the value's deserializer said (the
    /// dead letter then carries both failures, as with Spring's `ErrorHandlingDeserializer`).
    pub value_failure: Option<String>,
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
    /// first failure. Replaces an existing rule for `E`. Registers `E`
    /// ([`register_error_type`]).
    pub fn add_not_retryable<E: StdError + 'static>(&mut self) -> &mut Self {
        self.set::<E>(false)
    }

    /// Errors of type `E` are retried under the back-off. Replaces an existing rule for `E`.
    /// Registers `E` ([`register_error_type`]).
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
        register_error_type::<E>();
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

/// The first `E` in `error`'s `source()` chain, `error` itself first. The dead-letter
/// publisher, the batch failure search and the delegating error handler all look for a type
/// through the chain the same way, here: at most 65 levels, so that a chain that never ends (a
/// source cycle) cannot hang the container.
pub(crate) fn find_in_chain<'a, E: StdError + 'static>(
    error: &'a (dyn StdError + 'static),
) -> Option<&'a E> {
    std::iter::successors(Some(error), |&e| e.source())
        .take(65)
        .find_map(|e| e.downcast_ref::<E>())
}

/// The class of an error: a stable name for its type, Rust's analogue of a Java exception's
/// class name. The container compares classes to notice that a record now fails differently
/// (`reset_state_on_exception_change`), and dead letters carry them in the
/// `kafka_dlt-exception-fqcn` and `kafka_dlt-exception-cause-fqcn` headers (and, one per
/// level, in the stack trace). **The message never counts**: an error whose message changes on
/// every attempt keeps its class.
///
/// Rust cannot name the concrete type behind a `dyn Error`, so the class is, in this order:
///
/// 1. the type path ([`std::any::type_name`]) of a *known* type: rekafka's own errors
///    ([`crate::Error`] is `rekafka::Error`, [`DeserializationFailed`] is
///    `rekafka::listener::DeserializationFailed`, …), common standard errors
///    (`std::io::Error`, `core::num::ParseIntError`, …), and every type named to rekafka:
///    boxed with [`typed_error`], registered with [`register_error_type`], or named in a
///    [`Classifier`] rule;
/// 2. `alloc::string::String` for a string boxed as an error (`"text".into()`,
///    `format!(..).into()`: std's private string error type);
/// 3. the type name a *derived* `Debug` starts with (`InvalidOrder` for `InvalidOrder(..)` or
///    `InvalidOrder { .. }`; for an enum, the variant's name). Only an identifier followed by
///    `(`, ` {` or the end of the output counts, and not when the `Display` output starts the
///    same way: a `Debug` that prints the message does not name the type;
/// 4. otherwise `dyn core::error::Error` (an error of a type rekafka cannot name).
///
/// Name your error types (step 1) to get their full path, e.g.
/// `my_app::orders::InvalidOrder`:
///
/// ```
/// use rekafka::listener::{HandlerError, error_class, register_error_type, typed_error};
///
/// #[derive(thiserror::Error)]
/// #[error("order {0} is invalid")]
/// struct InvalidOrder(u32);
/// impl std::fmt::Debug for InvalidOrder { // prints the message: it cannot name the type
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "order {} is invalid", self.0)
///     }
/// }
///
/// let plain: HandlerError = Box::new(InvalidOrder(1));
/// assert_eq!(error_class(plain.as_ref()), "dyn core::error::Error");
/// let e: HandlerError = typed_error(InvalidOrder(2)); // boxes and registers the type
/// assert_eq!(error_class(e.as_ref()), std::any::type_name::<InvalidOrder>());
/// assert_eq!(error_class(plain.as_ref()), std::any::type_name::<InvalidOrder>());
///
/// let text: HandlerError = format!("attempt {} failed", 3).into();
/// assert_eq!(error_class(text.as_ref()), "alloc::string::String");
/// # register_error_type::<std::env::VarError>();
/// ```
pub fn error_class(error: &(dyn StdError + 'static)) -> String {
    if let Some(name) = known_type(error) {
        return name.to_owned();
    }
    if is_boxed_string(error) {
        return std::any::type_name::<String>().to_owned();
    }
    if let Some(name) = derived_debug_name(error) {
        return name;
    }
    UNNAMED_CLASS.to_owned()
}

/// Whether two [classes](error_class) name the same error type. A type's class is its short
/// name (from its derived `Debug`) until the type is registered ([`register_error_type`]), and
/// its path after: a registration between two failures of one record (another container's
/// classifier being built) must not read as a change of error.
pub(crate) fn same_class(a: &str, b: &str) -> bool {
    a == b
        || match (a.rsplit_once("::"), b.rsplit_once("::")) {
            (Some((_, short)), None) => short == b,
            (None, Some((_, short))) => short == a,
            _ => false,
        }
}

/// The class of an error whose type rekafka cannot name.
const UNNAMED_CLASS: &str = "dyn core::error::Error";

type IsType = fn(&(dyn StdError + 'static)) -> bool;

fn is_type<E: StdError + 'static>(e: &(dyn StdError + 'static)) -> bool {
    e.is::<E>()
}

/// rekafka's own error types (under their public paths) and common standard ones.
const BUILT_IN: &[(&str, IsType)] = &[
    ("rekafka::Error", is_type::<crate::Error>),
    (
        "rekafka::listener::DeserializationFailed",
        is_type::<DeserializationFailed>,
    ),
    (
        "rekafka::listener::BatchListenerFailed",
        is_type::<super::handler::BatchListenerFailed>,
    ),
    (
        "rekafka::listener::DeadLetterError",
        is_type::<super::dead_letter_publisher::DeadLetterError>,
    ),
    (
        "rekafka::producer::ProduceError",
        is_type::<crate::producer::ProduceError>,
    ),
    ("std::io::Error", is_type::<std::io::Error>),
    ("core::fmt::Error", is_type::<std::fmt::Error>),
    (
        "core::num::ParseIntError",
        is_type::<std::num::ParseIntError>,
    ),
    (
        "core::num::ParseFloatError",
        is_type::<std::num::ParseFloatError>,
    ),
    (
        "core::num::TryFromIntError",
        is_type::<std::num::TryFromIntError>,
    ),
    (
        "core::str::ParseBoolError",
        is_type::<std::str::ParseBoolError>,
    ),
    ("core::str::Utf8Error", is_type::<std::str::Utf8Error>),
    (
        "alloc::string::FromUtf8Error",
        is_type::<std::string::FromUtf8Error>,
    ),
    (
        "tokio::time::error::Elapsed",
        is_type::<tokio::time::error::Elapsed>,
    ),
];

/// Types named to rekafka at run time ([`register_error_type`]).
static REGISTERED: std::sync::RwLock<Vec<(TypeId, &'static str, IsType)>> =
    std::sync::RwLock::new(Vec::new());

fn known_type(e: &(dyn StdError + 'static)) -> Option<&'static str> {
    if let Some((name, _)) = BUILT_IN.iter().find(|(_, is)| is(e)) {
        return Some(name);
    }
    let registered = REGISTERED.read().unwrap_or_else(|p| p.into_inner());
    registered
        .iter()
        .find(|(_, _, is)| is(e))
        .map(|(_, n, _)| *n)
}

/// Names `E` to rekafka: from now on its [class](error_class) is its type path,
/// `std::any::type_name::<E>()` (e.g. `my_app::orders::InvalidOrder`), wherever it appears in
/// an error chain. Registering a type twice does nothing. Types named in a [`Classifier`]
/// rule and errors boxed with [`typed_error`] are registered already.
///
/// ```
/// #[derive(Debug, thiserror::Error)]
/// #[error("price is negative")]
/// struct InvalidOrder;
///
/// rekafka::listener::register_error_type::<InvalidOrder>();
/// assert!(rekafka::listener::error_class(&InvalidOrder).ends_with("::InvalidOrder"));
/// ```
pub fn register_error_type<E: StdError + 'static>() {
    let id = TypeId::of::<E>();
    let seen = |v: &Vec<(TypeId, &'static str, IsType)>| v.iter().any(|(t, _, _)| *t == id);
    if seen(&REGISTERED.read().unwrap_or_else(|p| p.into_inner())) {
        return;
    }
    let mut registered = REGISTERED.write().unwrap_or_else(|p| p.into_inner());
    if !seen(&registered) {
        registered.push((id, std::any::type_name::<E>(), is_type::<E>));
    }
}

/// Boxes `error` as a [`HandlerError`] and [registers](register_error_type) its type, so its
/// [class](error_class) is its type path. Use it where a handler fails with its own error
/// type: `return Err(typed_error(InvalidOrder(id)))`, or `.map_err(typed_error)?`.
pub fn typed_error<E: StdError + Send + Sync + 'static>(error: E) -> HandlerError {
    register_error_type::<E>();
    Box::new(error)
}

/// Whether `e` is a string boxed as an error (std's private `StringError`, whose `Debug` is
/// the string's and whose `Display` is the string itself).
fn is_boxed_string(e: &(dyn StdError + 'static)) -> bool {
    if e.source().is_some() {
        return false;
    }
    let (lead, _) = debug_lead(e, |c| c == '"');
    if lead.is_empty() {
        return false;
    }
    format!("{e:?}") == format!("{:?}", e.to_string())
}

/// The type name a derived `Debug` output of `e` starts with (see [`error_class`]).
fn derived_debug_name(e: &(dyn StdError + 'static)) -> Option<String> {
    let (name, next) = debug_lead(e, |c| c.is_alphanumeric() || c == '_');
    let first = name.chars().next()?;
    if !(first.is_alphabetic() || first == '_') {
        return None;
    }
    let derived = next.is_empty() || next.starts_with('(') || next == " {";
    // A `Debug` that prints the message reads like the `Display` output.
    let lead = format!("{name}{next}");
    (derived && !e.to_string().starts_with(&lead)).then_some(name)
}

/// Formats `e`'s `Debug` only as far as needed: its leading run of characters for which
/// `take` holds, and up to two characters after it. An error's `Debug` may be long (it may
/// hold the record), and classes are computed for failures.
fn debug_lead(e: &(dyn StdError + 'static), take: fn(char) -> bool) -> (String, String) {
    use std::fmt::Write as _;
    struct Lead {
        take: fn(char) -> bool,
        lead: String,
        next: String,
        in_lead: bool,
    }
    impl std::fmt::Write for Lead {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for c in s.chars() {
                if self.in_lead {
                    if (self.take)(c) && self.lead.len() < MAX_CLASS_CHARS {
                        self.lead.push(c);
                        continue;
                    }
                    self.in_lead = false;
                }
                self.next.push(c);
                if self.next.chars().count() >= 2 {
                    return Err(std::fmt::Error);
                }
            }
            Ok(())
        }
    }
    let mut lead = Lead {
        take,
        lead: String::new(),
        next: String::new(),
        in_lead: true,
    };
    let _ = write!(lead, "{e:?}");
    (lead.lead, lead.next)
}

/// The longest type name taken from a `Debug` output.
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
            value_failure: None,
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
        // Types of their own: the classifier tests register A, B and C.
        #[derive(Debug, thiserror::Error)]
        #[error("d")]
        struct D;
        #[derive(Debug, thiserror::Error)]
        #[error("e {0}")]
        struct E(u32);
        #[derive(Debug, thiserror::Error)]
        enum F {
            #[error("g {n}")]
            G { n: u32 },
        }
        assert_eq!(error_class(&D), "D");
        assert_eq!(error_class(&E(1)), "E");
        assert_eq!(error_class(&F::G { n: 1 }), "G");
        // Boxed strings: one class whatever the text.
        for text in ["plain text", "attempt 2", "\"quoted\"", ""] {
            let boxed: HandlerError = text.into();
            assert_eq!(error_class(boxed.as_ref()), "alloc::string::String");
        }
        let boxed: HandlerError = format!("attempt {}", 7).into();
        assert_eq!(error_class(boxed.as_ref()), "alloc::string::String");
        // Known types: their path.
        assert_eq!(error_class(&crate::Error::config("x")), "rekafka::Error");
        let io = std::io::Error::other("disk on fire");
        assert_eq!(error_class(&io), "std::io::Error");
        let d = DeserializationFailed {
            part: RecordPart::Key,
            message: "bad".into(),
            value_failure: None,
        };
        assert_eq!(error_class(&d), "rekafka::listener::DeserializationFailed");
        let parse = "x".parse::<u8>().unwrap_err();
        assert_eq!(error_class(&parse), "core::num::ParseIntError");
        typed_error(E(2));
        assert_eq!(error_class(&E(3)), std::any::type_name::<E>());
        assert!(std::any::type_name::<E>().starts_with("rekafka::"));
    }

    #[test]
    fn messages_never_count() {
        /// `Debug` prints the message.
        #[derive(thiserror::Error)]
        #[error("{0}")]
        struct Msg(String);
        impl std::fmt::Debug for Msg {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        for m in [
            "Timeout",
            "Timeout2",
            "connection refused",
            "Call(3) failed",
            "{x}",
            "",
        ] {
            assert_eq!(error_class(&Msg(m.into())), "dyn core::error::Error", "{m}");
        }
        classifier_rules_register_their_types();
        fn classifier_rules_register_their_types() {
            let mut c = Classifier::default();
            c.add_retryable::<Msg>();
            assert_eq!(error_class(&Msg("x".into())), std::any::type_name::<Msg>());
        }
    }

    #[test]
    fn rekafka_errors_classify_by_type() {
        let mut c = Classifier::default();
        c.add_not_retryable::<crate::Error>();
        let e = crate::Error::config("x");
        assert!(!c.is_retryable(&e));
    }
}
