//! Wildcard patterns: `*` for any run of characters, `?` for one, as OpenSSH's
//! `known_hosts` host patterns mean them (ssh remotes). (`.dockerignore` has
//! Go's richer `filepath.Match` syntax: `image::Ignore`, through globset.)

/// Does `text` match `pattern`, where `*` stands for any run of characters and `?`
/// for one? (What OpenSSH's host patterns mean.)
pub fn matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            backtrack = Some((p, t));
            p += 1;
        } else if let Some((star, from)) = backtrack {
            p = star + 1;
            t = from + 1;
            backtrack = Some((star, from + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("*", "anything"));
        assert!(matches("a*c", "abbbc"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "abbc"));
        assert!(matches("*.example.com", "git.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(
            matches("?ber uns.html", "über uns.html"),
            "`?` is one character, not one byte"
        );
    }
}
