//! How streamed text is cut into `agent_message` pieces: bounded by their escaped size, so
//! that no event outgrows DynamoDB's item or transaction limits.

/// The most bytes one `agent_message` piece takes once stored (its text as escaped in the
/// event's JSON payload): streamed text is written as soon as this much is pending, and a
/// longer pending text is written in several pieces, so a fast stream (a cache or a proxy
/// can send megabytes in a second) never makes an event over DynamoDB's 400 KB item, nor a
/// transaction over its 4 MB.
pub const PIECE_BYTES: usize = 64 * 1024;

/// How many bytes `c` takes in a JSON string (escaped as serde_json escapes it).
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Where the first piece of `text` ends: the longest prefix (on a character boundary, at
/// least one character) whose escaped size is at most `max_bytes`.
pub fn piece_end(text: &str, max_bytes: usize) -> usize {
    let mut size = 0;
    for (at, c) in text.char_indices() {
        size += escaped_len(c);
        if size > max_bytes && at > 0 {
            return at;
        }
    }
    text.len()
}

/// The escaped size of `text` in a JSON string.
pub fn escaped_size(text: &str) -> usize {
    text.chars().map(escaped_len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_bounded_by_their_escaped_size_and_split_on_characters() {
        assert_eq!(piece_end("", 4), 0);
        assert_eq!(piece_end("abcdef", 4), 4);
        // Each quote takes two bytes escaped: two of them fill four bytes.
        assert_eq!(piece_end("\"\"\"\"", 4), 2);
        // A four-byte character is never cut, and a piece holds at least one character.
        assert_eq!(piece_end("\u{1D11E}\u{1D11E}", 6), 4);
        assert_eq!(piece_end("\u{1D11E}", 2), 4);
        assert_eq!(escaped_size("a\"\\\u{1}é"), 1 + 2 + 2 + 6 + 2);
        // Pieces of a long text, rejoined, are the text; each within the bound as stored.
        let text: String = "q\"é\u{1D11E}\n".repeat(50_000);
        let mut rest = text.as_str();
        let mut joined = String::new();
        while !rest.is_empty() {
            let end = piece_end(rest, PIECE_BYTES);
            let stored = serde_json::json!({ "text": &rest[..end] }).to_string();
            assert!(stored.len() <= PIECE_BYTES + 20, "{} bytes", stored.len());
            joined.push_str(&rest[..end]);
            rest = &rest[end..];
        }
        assert_eq!(joined, text);
    }
}
