//! Docker image references: `busybox`, `ghcr.io/acme/app:pr-1`, `localhost:5000/x@sha256:…`.
//!
//! Parsed with Docker's own rules for what counts as a registry, so that a registry allowlist
//! compares `docker.io` with `busybox` the way `docker pull` would resolve it.

/// The registry Docker uses when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (and port), `docker.io` when the reference has none.
    pub registry: String,
    /// Repository path within the registry (`library/busybox` for `busybox`).
    pub repository: String,
    /// Tag, when given.
    pub tag: Option<String>,
    /// Digest (`sha256:…`), when given.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parse a reference, or say what is wrong with it.
    pub fn parse(reference: &str) -> Result<Self, String> {
        if reference.is_empty() {
            return Err("image reference is empty".to_string());
        }
        if reference.len() > 255 + 128 + 72 {
            return Err("image reference is too long".to_string());
        }
        if reference.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("image reference {reference:?} contains whitespace"));
        }
        let (name_and_tag, digest) = match reference.split_once('@') {
            Some((n, d)) => {
                let (algo, hex) = d
                    .split_once(':')
                    .ok_or_else(|| format!("digest {d:?} of {reference:?} is not of the form algorithm:hex"))?;
                if algo.is_empty() || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!("digest {d:?} of {reference:?} is not of the form algorithm:hex"));
                }
                (n, Some(d.to_string()))
            }
            None => (reference, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = name_and_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &name_and_tag[last_slash + i + 1..];
                (&name_and_tag[..last_slash + i], Some(tag.to_string()))
            }
            None => (name_and_tag, None),
        };
        if let Some(tag) = &tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !valid {
                return Err(format!("tag {tag:?} of {reference:?} is invalid"));
            }
        }
        let mut components: Vec<&str> = name.split('/').collect();
        let registry = if components.len() > 1
            && (components[0].contains('.') || components[0].contains(':') || components[0] == "localhost")
        {
            let r = components.remove(0);
            if r.is_empty() {
                return Err(format!("registry of {reference:?} is empty"));
            }
            r.to_string()
        } else {
            DEFAULT_REGISTRY.to_string()
        };
        for c in &components {
            if !valid_path_component(c) {
                return Err(format!(
                    "repository {name:?} of {reference:?} is invalid: each path component must be lowercase \
                     letters, digits and separators (., _, __, -)"
                ));
            }
        }
        let mut repository = components.join("/");
        if registry == DEFAULT_REGISTRY && components.len() == 1 {
            repository = format!("library/{repository}");
        }
        Ok(Self { registry, repository, tag, digest })
    }
}

fn valid_path_component(c: &str) -> bool {
    if c.is_empty() {
        return false;
    }
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    bytes.iter().all(|&b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_registries_like_docker() {
        let cases = [
            ("busybox", "docker.io", "library/busybox", None),
            ("busybox:1.36", "docker.io", "library/busybox", Some("1.36")),
            ("acme/app", "docker.io", "acme/app", None),
            ("ghcr.io/acme/app:pr-1234", "ghcr.io", "acme/app", Some("pr-1234")),
            ("localhost:5000/app:v1", "localhost:5000", "app", Some("v1")),
            ("localhost/app", "localhost", "app", None),
            ("berth-e2e/busybox:latest", "docker.io", "berth-e2e/busybox", Some("latest")),
        ];
        for (text, registry, repo, tag) in cases {
            let r = ImageRef::parse(text).unwrap();
            assert_eq!(r.registry, registry, "{text}");
            assert_eq!(r.repository, repo, "{text}");
            assert_eq!(r.tag.as_deref(), tag, "{text}");
        }
    }

    #[test]
    fn keeps_digests() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let r = ImageRef::parse(&format!("ghcr.io/a/b@{d}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(d));
        assert_eq!(r.tag, None);
    }

    #[test]
    fn refuses_malformed_references() {
        for text in ["", "Busybox", "a b", "app:", "app:-x", "/app", "ghcr.io//x", "x@sha256:zz", "app:t@bad"] {
            assert!(ImageRef::parse(text).is_err(), "{text} should be refused");
        }
    }
}
