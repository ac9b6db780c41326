//! [`FieldError`]: a request field that broke a rule, and [`clean_name`], the one check every
//! human-readable name goes through. Shared so that every service words its InvalidArgument
//! answers the same way: `<field> <rule>`.

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
    /// `field` broke `rule` (worded to follow the field's name: "must not be empty").
    pub fn new(field: &'static str, rule: impl Into<String>) -> Self {
        Self {
            field,
            rule: rule.into(),
        }
    }
}

/// Checks a human-readable name: trimmed, 1..=`max` characters, no control characters.
/// Returns the trimmed name or the rule it breaks.
pub fn clean_name(field: &'static str, raw: &str, max: usize) -> Result<String, FieldError> {
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
