//! Checks of free text from users on its way into PostgreSQL.

use crate::error::ApiError;

/// `value` of `field`: at most `max` characters and no NUL (PostgreSQL's
/// text cannot hold one: unchecked, it is a 500 after the request did part
/// of its work).
pub fn check(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let len = value.chars().count();
    if len > max {
        return Err(ApiError::BadRequest(format!(
            "{field} is {len} characters; at most {max}"
        )));
    }
    if value.contains('\0') {
        return Err(ApiError::BadRequest(format!(
            "{field} must not contain NUL characters"
        )));
    }
    Ok(())
}

/// [`check`] of a field that may be absent.
pub fn check_opt(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    value.map_or(Ok(()), |v| check(field, v, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_refused_for_its_length_or_a_nul_naming_the_field() {
        assert!(check("title", "ab", 2).is_ok());
        assert!(check_opt("title", None, 0).is_ok());
        for (value, says) in [
            ("abc", "title is 3 characters; at most 2"),
            ("a\0", "title must not contain NUL"),
        ] {
            let Err(ApiError::BadRequest(message)) = check("title", value, 2) else {
                panic!("{value:?} passed");
            };
            assert!(message.starts_with(says), "{message}");
        }
        // Characters, not bytes.
        assert!(check("title", "éé", 2).is_ok());
    }
}
