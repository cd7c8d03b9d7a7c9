//! Input rules: what an email and a password must be.

use zatabase_guest_kit::ApiError;

/// The stored form of an email address: trimmed, lower case, Unicode NFC
/// (`jose\u{301}` is `jos\u{e9}`, as a user typing either expects), and
/// plausibly an address (one `@`, a local part, a dotted domain, no spaces,
/// no invisible characters that would make a look-alike of another).
pub fn email(raw: &str) -> Result<String, ApiError> {
    use unicode_normalization::UnicodeNormalization;
    let email: String = raw.trim().to_lowercase().nfc().collect();
    let invalid = || ApiError::unprocessable("`email` is not a valid email address");
    if email.is_empty()
        || email.len() > 254
        || email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || invisible(c))
    {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return Err(invalid());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels
            .iter()
            .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
    {
        return Err(invalid());
    }
    Ok(email)
}

/// The password policy: 8 to 1024 characters, and not the email address.
pub fn password(password: &str, email: &str) -> Result<(), ApiError> {
    let length = password.chars().count();
    if length < 8 {
        return Err(ApiError::unprocessable(
            "password must be at least 8 characters long",
        ));
    }
    if length > 1024 {
        return Err(ApiError::unprocessable(
            "password must be at most 1024 characters long",
        ));
    }
    if password.trim().to_lowercase() == email {
        return Err(ApiError::unprocessable(
            "password must not be the email address",
        ));
    }
    Ok(())
}

/// A display name: trimmed, at most 200 characters; empty means none.
pub fn name(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(name) = raw.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "`name` must be at most 200 printable characters",
        ));
    }
    Ok(Some(name.to_owned()))
}

/// Unicode's default-ignorable code points (zero-width spaces and joiners,
/// direction marks, variation selectors, soft hyphens, tags...): shown as
/// nothing, so `ada\u{200b}@x.io` would pass for `ada@x.io`.
fn invisible(c: char) -> bool {
    matches!(
        u32::from(c),
        0xAD | 0x34F
            | 0x61C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// A project slug from an email's local part: `[a-z0-9-]`, never empty.
pub fn slug_base(email: &str) -> String {
    let local = email.split('@').next().unwrap_or_default();
    let mut slug: String = local
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug = slug.trim_matches('-').chars().take(40).collect();
    let slug = slug.trim_end_matches('-').to_owned();
    if slug.is_empty() {
        "project".to_owned()
    } else {
        slug
    }
}

/// Whether `text` is a UUID in its canonical lowercase form.
pub fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(email("  Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@@example.com",
            "ada@.com",
            "ada@example.com.",
        ] {
            assert_eq!(email(bad).unwrap_err().status, 422, "{bad}");
        }
        // One address however its accents are composed.
        assert_eq!(
            email("Jose\u{301}@example.com").unwrap(),
            email("jos\u{e9}@example.com").unwrap()
        );
        assert_eq!(
            email("jos\u{e9}@example.com").unwrap(),
            "jos\u{e9}@example.com"
        );
        // No invisible look-alikes.
        for bad in [
            "ada\u{200b}@example.com",
            "a\u{ad}da@example.com",
            "ada@exa\u{feff}mple.com",
        ] {
            assert_eq!(email(bad).unwrap_err().status, 422, "{bad:?}");
        }
    }

    #[test]
    fn passwords_follow_the_policy() {
        assert!(password("long enough", "ada@example.com").is_ok());
        assert!(
            password("short", "ada@example.com")
                .unwrap_err()
                .message
                .contains("8 characters")
        );
        assert!(
            password("Ada@Example.com", "ada@example.com")
                .unwrap_err()
                .message
                .contains("email")
        );
        assert!(password(&"x".repeat(1025), "a@b.co").is_err());
    }

    #[test]
    fn slugs_are_url_safe() {
        assert_eq!(
            slug_base("Ada.Lovelace+test@example.com"),
            "ada-lovelace-test"
        );
        assert_eq!(slug_base("+++@example.com"), "project");
    }
}
