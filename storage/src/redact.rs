//! URIs as they may be shown: statuses, conditions, `/status` and logs are read by people and
//! scrapers that must not learn credentials, so a URI's user information (`user:password@`) and
//! query string (a presigned URL's signature) are replaced before it is printed.

/// `uri` with its user information and query string replaced by `***`; anything that does not
/// parse as a URL is returned as it is.
pub fn redact(uri: &str) -> String {
    let Ok(mut url) = url::Url::parse(uri) else { return uri.to_string() };
    if url.cannot_be_a_base() {
        return uri.to_string();
    }
    let mut changed = false;
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("***");
        let _ = url.set_password(None);
        changed = true;
    }
    if url.query().is_some() {
        url.set_query(Some("***"));
        changed = true;
    }
    if url.fragment().is_some() {
        url.set_fragment(None);
        changed = true;
    }
    if changed { url.to_string() } else { uri.to_string() }
}

/// `text` with every URL in it (a whitespace-, quote- or bracket-delimited word holding `://`)
/// redacted.
pub fn redact_text(text: &str) -> String {
    let delimiter = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '(' | ')' | '<' | '>' | '[' | ']' | ',');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| !delimiter(c)) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(delimiter).unwrap_or(rest.len());
        let word = &rest[..end];
        // Punctuation that ends a sentence is not part of the URL ("cannot read URL: reason").
        let url = word.trim_end_matches([':', '.', ';']);
        if url.contains("://") {
            out.push_str(&redact(url));
            out.push_str(&word[url.len()..]);
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_information_and_query_strings_are_replaced() {
        assert_eq!(redact("https://alice:s3cret@models.example/m.onnx"), "https://***@models.example/m.onnx");
        assert_eq!(
            redact("https://b.example/m.onnx?X-Amz-Signature=abc&X-Amz-Credential=k"),
            "https://b.example/m.onnx?***"
        );
        assert_eq!(redact("s3://bucket/models/m.onnx"), "s3://bucket/models/m.onnx");
        assert_eq!(redact("pvc://claim/m.onnx"), "pvc://claim/m.onnx");
        assert_eq!(redact("not a uri"), "not a uri");
    }

    #[test]
    fn urls_inside_messages_are_redacted_and_the_rest_kept() {
        let msg =
            "cannot read https://u:pw@h.example/a?sig=1: Error performing GET \"https://h.example/a?sig=1\" (403)";
        let out = redact_text(msg);
        assert!(!out.contains("pw") && !out.contains("sig=1"), "{out}");
        assert!(out.starts_with("cannot read https://***@h.example/a?***: Error performing GET"), "{out}");
        assert!(out.ends_with("(403)"), "{out}");
    }
}
