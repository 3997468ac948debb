//! Credentials in URLs: shown and stored only as `***`.
//!
//! A URL may carry a user and a password (`http://user:pw@host/`, `nats://user:pw@host`).
//! replayfleet connects with the URL as given, but every URL it prints, logs or writes
//! into a file (the plan's `lineage_url`, warnings, error messages) goes through
//! [`redact_url`] first.

/// `url` with its user information (`user:password@`, or a token `token@`) replaced by
/// `***`, everything else kept as written: `http://user:pw@host:5000/x` becomes
/// `http://***@host:5000/x`.
///
/// Never fails: the text is not parsed as a URL but scanned, so an unparseable URL is
/// redacted too. The authority is what follows `scheme://` up to the first `/`, `?` or
/// `#`, and its user information everything before its last `@`. Text without `://`
/// that is not a path (`user:pw@host:4222`, or a malformed `http//user:pw@host`) loses
/// everything before its last `@` ahead of any `?` or `#`. A comma-separated list of
/// URLs (as NATS accepts) is redacted URL by URL.
pub fn redact_url(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let (start, end) = match url.find("://") {
        // The authority ends at the first `/`, `?` or `#`.
        Some(at) => {
            let rest = &url[at + 3..];
            (
                at + 3,
                at + 3 + rest.find(['/', '?', '#']).unwrap_or(rest.len()),
            )
        }
        // A bare path has no authority.
        None if url.trim_start().starts_with(['/', '.', '\\']) => return url.to_owned(),
        // `user:pw@host:4222` (NATS takes a server without a scheme), or a malformed
        // URL (`http//user:pw@host`, `https:/user:pw@host`): on the safe side,
        // everything before the last `@` ahead of any query or fragment.
        None => (0, url.find(['?', '#']).unwrap_or(url.len())),
    };
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn user_information_becomes_stars() {
        for (url, want) in [
            ("http://user:pw@host/", "http://***@host/"),
            (
                "https://user:p%40ss@marquez:5000/api/v1/lineage?x=1#f",
                "https://***@marquez:5000/api/v1/lineage?x=1#f",
            ),
            ("nats://user:secret@127.0.0.1:1", "nats://***@127.0.0.1:1"),
            ("nats://token@nats:4222", "nats://***@nats:4222"),
            (
                "tls://u:p@a:4222,tls://u:p@b:4222",
                "tls://***@a:4222,tls://***@b:4222",
            ),
            ("user:pw@host:4222", "***@host:4222"),
            // a raw `@` in the password: everything before the last `@` goes
            ("http://user:p@ss@host/", "http://***@host/"),
            // not a URL a parser accepts: redacted all the same
            ("http://user:pw@[::1", "http://***@[::1"),
            ("ht tp://us er:pw@ho st/", "ht tp://***@ho st/"),
            ("://user:pw@", "://***@"),
            ("http//user:pw@marquez", "***@marquez"),
            ("https:/user:pw@marquez/x", "***@marquez/x"),
            ("host/user:pw@x?q=a@b", "***@x?q=a@b"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn urls_without_credentials_stay_as_written() {
        for url in [
            "http://host:5000/api/v1/lineage",
            "s3://bucket/archive/events",
            "s3://bucket/archive/a@b.parquet",
            "http://host/path?email=a@b.c",
            "nats://127.0.0.1:4222",
            "/data/events@2024",
            "./events",
            "file:///data/x@y",
            "",
            "@",
            "not a url",
        ] {
            let want = if url == "@" { "***@" } else { url };
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn nothing_before_the_last_at_of_the_authority_survives() {
        let url = "nats://alice:hunter2@nats.internal:4222";
        let shown = redact_url(url);
        assert!(
            !shown.contains("hunter2") && !shown.contains("alice"),
            "{shown}"
        );
        assert!(shown.ends_with("@nats.internal:4222"), "{shown}");
    }
}
