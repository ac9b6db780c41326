//! Pure aggregates of the enrollment service. This module imports no sqlx, tonic or
//! async-nats; its tests are given/when/then without I/O.

pub mod agent;
pub mod api_key;
pub mod ca;
pub mod enrollment_token;
pub mod org;
pub mod signing_key;

/// Checks a human-readable name: trimmed, 1..=`max` characters, no control characters.
/// Returns the trimmed name or the rule it breaks.
pub(crate) fn clean_name(field: &'static str, raw: &str, max: usize) -> Result<String, FieldError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if chars > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters, got {chars}"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// A field broke a rule. Rendered as `<field> <rule>`, the form every Coffer
/// InvalidArgument takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {rule}")]
pub struct FieldError {
    /// The field, as named in the API.
    pub field: &'static str,
    /// What is wrong with it.
    pub rule: String,
}

impl FieldError {
    pub(crate) fn new(field: &'static str, rule: impl Into<String>) -> Self {
        Self {
            field,
            rule: rule.into(),
        }
    }
}
