//! Task names users group by: `"{METHOD} {route template}"`, else a normalized path.
//!
//! tprof keeps its statistics per task name, so a name must be the same for every request
//! of one kind (`GET /users/{id}`), not one per URL. Shared by the HTTP layer (feature
//! `tower`) and the `tracing` layer (feature `tracing`).

use std::borrow::Cow;

/// tprof copies at most 64 bytes of a task name (ABI.md 1.2).
#[cfg_attr(not(any(feature = "tower", feature = "tracing")), allow(dead_code))]
pub(crate) const NAME_MAX: usize = 64;

/// What a path segment that looks like an id or a number is folded to.
pub const ID_PLACEHOLDER: &str = "{id}";

/// `s` cut to at most `max` bytes, on a character boundary.
#[cfg_attr(not(any(feature = "tower", feature = "tracing")), allow(dead_code))]
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether a path segment is an id rather than a name: it has a digit and is either all
/// digits or longer than 3 bytes (`42`, `2024`, `9f8e7d6c`, a UUID, `file-17.txt` are ids;
/// `v1`, `s3`, `users` are not).
fn is_id(seg: &str) -> bool {
    let digits = seg.bytes().filter(u8::is_ascii_digit).count();
    digits > 0 && (digits == seg.len() || seg.len() > 3)
}

/// The path of `uri` (a full URL or an origin-form `/path?query`): no scheme, authority,
/// query or fragment.
#[cfg_attr(not(any(feature = "tower", feature = "tracing")), allow(dead_code))]
pub(crate) fn uri_path(uri: &str) -> &str {
    let rest = match uri.find("://") {
        Some(i) => {
            let after = &uri[i + 3..];
            after.find('/').map(|j| &after[j..]).unwrap_or("/")
        }
        None => uri,
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// `path` with every segment that looks like an id or a number replaced by `{id}`
/// (`/users/42/orders/9f8e7d6c` -> `/users/{id}/orders/{id}`), so that requests for
/// different objects share a name. Borrowed when nothing was folded.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    if !path.split('/').any(is_id) {
        return Cow::Borrowed(path);
    }
    let segs: Vec<&str> = path.split('/').map(|s| if is_id(s) { ID_PLACEHOLDER } else { s }).collect();
    Cow::Owned(segs.join("/"))
}

/// `"{method} {rest}"` (or `rest` alone without a method), cut to tprof's 64-byte limit.
#[cfg_attr(not(any(feature = "tower", feature = "tracing")), allow(dead_code))]
pub(crate) fn method_name(method: Option<&str>, rest: &str) -> String {
    let name = match method {
        Some(m) if !m.is_empty() => format!("{m} {rest}"),
        _ => rest.to_string(),
    };
    cut(&name, NAME_MAX).to_string()
}

#[cfg(test)]
mod tests {
    use super::{method_name, normalize_path, uri_path};

    #[test]
    fn ids_and_numbers_fold_names_stay() {
        assert_eq!(normalize_path("/users/42/orders/9f8e7d6c"), "/users/{id}/orders/{id}");
        assert_eq!(normalize_path("/api/v1/items/123e4567-e89b-12d3-a456-426614174000"), "/api/v1/items/{id}");
        assert_eq!(normalize_path("/static/index.html"), "/static/index.html");
        assert_eq!(normalize_path("/missing-17"), "/{id}");
        assert_eq!(normalize_path("/"), "/");
    }

    #[test]
    fn uri_paths_and_cut_names() {
        assert_eq!(uri_path("http://svc:80/a/b?x=1#f"), "/a/b");
        assert_eq!(uri_path("http://svc"), "/");
        assert_eq!(uri_path("/a?b"), "/a");
        let long = method_name(Some("GET"), &"ü".repeat(60));
        assert!(long.len() <= 64 && long.starts_with("GET ü"), "{long}");
        assert_eq!(method_name(None, "/x"), "/x");
    }
}
