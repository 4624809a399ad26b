//! HTML bodies: the text a reader would see, plus cue tokens for what a reader
//! would not (hidden text, images, forms, comments) and the link targets.
//!
//! Inline tags are removed *without* a space, so `fr<b></b>ee` reads "free" as
//! the eye does (the classic tag-splitting obfuscation); block-level tags
//! (`p`, `br`, `div`, table cells...) do separate words, as they do on screen.
//! `<style>` and `<script>` content is dropped; entities are decoded.
//!
//! No token per tag name: `<p>`, `<a>`, `<br>`, `<body>`... come together in
//! nearly every HTML message, so Fisher's combination, which takes tokens
//! as independent, counted "this is HTML" eight or ten times over, and HTML
//! ham was called spam on markup alone (bogofilter keeps no tag tokens
//! either). Without them 1-ROCA% went from 0.0038 to 0.0025 on the merged
//! stream, 0.0137 to 0.0127 on csdmc2010, 0.0384 to 0.0382 on spamassassin
//! (enron-raw 0.0002 both; bench/RESULTS.md). `html:present` and the cues
//! below remain. Databases that hold `html:tag:` records from before simply
//! never look them up again (`db expire` removes them in time).

use super::{Sink, prefix, small_bucket, url};

const BLOCK_TAGS: &[&str] = &[
    "p",
    "br",
    "div",
    "td",
    "th",
    "tr",
    "li",
    "ul",
    "ol",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "blockquote",
    "pre",
    "title",
    "body",
    "head",
    "html",
    "center",
    "dd",
    "dt",
    "dl",
    "tbody",
    "thead",
    "section",
    "article",
    "header",
    "footer",
    "form",
    "option",
    "select",
];

/// Returns the visible text of `html` and pushes the cue tokens.
pub(crate) fn tokenize(html: &str, sink: &mut Sink) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut imgs = 0usize;
    let mut links = 0usize;
    let mut comments = 0usize;
    let mut hidden = false;
    let mut form = false;
    let mut i = 0;
    let b = html.as_bytes();
    while i < b.len() {
        match b[i] {
            b'<' => {
                if html[i..].starts_with("<!--") {
                    comments += 1;
                    i = html[i + 4..].find("-->").map_or(b.len(), |e| i + 4 + e + 3);
                    continue;
                }
                let Some(rel_end) = html[i..].find('>') else {
                    // No '>' anywhere after this: no later '<' can open a
                    // tag either, so the rest is text (and scanning stays
                    // linear on a part full of unclosed '<').
                    out.push_str(&html[i..]);
                    break;
                };
                let tag = &html[i + 1..i + rel_end];
                i += rel_end + 1;
                let closing = tag.starts_with('/');
                let tag_body = tag.trim_start_matches('/');
                let name_end = tag_body.find(|c: char| c.is_ascii_whitespace() || c == '/').unwrap_or(tag_body.len());
                let name = tag_body[..name_end].to_ascii_lowercase();
                let attrs = &tag_body[name_end..];
                if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'!' || c == b'-') {
                    continue;
                }
                if !closing && (name == "script" || name == "style") {
                    // Drop everything up to the matching close tag.
                    let close = format!("</{name}");
                    i = find_ci(&html[i..], &close).map_or(b.len(), |e| i + e);
                    continue;
                }
                if BLOCK_TAGS.contains(&name.as_str()) {
                    out.push(' ');
                }
                if closing {
                    continue;
                }
                match name.as_str() {
                    "img" => {
                        imgs += 1;
                        if let Some(src) = attr(attrs, "src") {
                            url::crack(&decode_entities(src), sink);
                        }
                    }
                    "a" | "area" => {
                        if let Some(href) = attr(attrs, "href") {
                            links += 1;
                            url::crack(&decode_entities(href), sink);
                        }
                    }
                    "form" | "input" => form = true,
                    _ => {}
                }
                if is_hidden(&name, attrs) {
                    hidden = true;
                }
            }
            b'&' => {
                let (decoded, used) = entity(&html[i..]);
                match decoded {
                    Some(c) => out.push(c),
                    None => out.push('&'),
                }
                i += used;
            }
            _ => {
                let next = html[i..].find(['<', '&']).map_or(b.len(), |e| i + e);
                out.push_str(&html[i..next]);
                i = next;
            }
        }
    }
    sink.push(prefix::HTML, "present");
    if imgs > 0 {
        sink.push(prefix::HTML, &format!("img:{}", small_bucket(imgs)));
    }
    if links > 0 {
        sink.push(prefix::HTML, &format!("links:{}", small_bucket(links)));
    }
    if comments > 0 {
        sink.push(prefix::HTML, &format!("comments:{}", small_bucket(comments)));
    }
    if hidden {
        sink.push(prefix::HTML, "hidden-text");
    }
    if form {
        sink.push(prefix::HTML, "form");
    }
    let visible = out.split_whitespace().count();
    if visible < 10 && imgs > 0 {
        sink.push(prefix::HTML, "mostly-images");
    }
    out
}

/// Markup that hides text from the reader but not from a naive filter.
fn is_hidden(name: &str, attrs: &str) -> bool {
    let a = attrs.to_ascii_lowercase();
    let compact: String = a.chars().filter(|c| !c.is_whitespace()).collect();
    compact.contains("display:none")
        || compact.contains("visibility:hidden")
        || compact.contains("font-size:0")
        || compact.contains("font-size:1px")
        || (name == "font" && (compact.contains("size=\"0\"") || compact.contains("size=0")))
        || compact.contains("color=\"#ffffff\"")
        || compact.contains("color=#ffffff")
        || compact.contains("color:#fff")
}

/// Case-insensitive ASCII find.
fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let h = hay.as_bytes();
    let n = needle.as_bytes();
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    (0..=h.len() - n.len()).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// The value of attribute `name` in a tag's attribute text.
fn attr<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(p) = find_ci(&attrs[from..], name) {
        let start = from + p;
        from = start + name.len();
        let before_ok = start == 0 || attrs.as_bytes()[start - 1].is_ascii_whitespace();
        let rest = attrs[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let v = rest[1..].trim_start();
        return Some(match v.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let v = &v[1..];
                &v[..v.find(q).unwrap_or(v.len())]
            }
            _ => &v[..v.find(|c: char| c.is_ascii_whitespace()).unwrap_or(v.len())],
        });
    }
    None
}

/// Decodes the entity at the start of `s` (which begins with '&'); returns the
/// character (if any) and how many bytes were consumed.
fn entity(s: &str) -> (Option<char>, usize) {
    let end = match s[1..].bytes().take(10).position(|b| b == b';') {
        Some(e) => e + 1,
        None => return (None, 1),
    };
    let name = &s[1..end];
    let c = if let Some(num) = name.strip_prefix('#') {
        let v = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => num.parse::<u32>().ok(),
        };
        v.and_then(char::from_u32)
    } else {
        match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some(' '),
            "copy" => Some('©'),
            "reg" => Some('®'),
            "trade" => Some('™'),
            "euro" => Some('€'),
            "pound" => Some('£'),
            "mdash" => Some('—'),
            "ndash" => Some('–'),
            "hellip" => Some('…'),
            "rsquo" | "lsquo" => Some('\''),
            "rdquo" | "ldquo" => Some('"'),
            _ => None,
        }
    };
    match c {
        Some(c) => (Some(c), end + 1),
        None => (None, 1),
    }
}

/// Decodes all entities in an attribute value.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s.as_bytes()[i] == b'&' {
            let (c, used) = entity(&s[i..]);
            out.push(c.unwrap_or('&'));
            i += used;
        } else {
            let next = s[i..].find('&').map_or(s.len(), |e| i + e);
            out.push_str(&s[i..next]);
            i = next;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Limits, Sink};
    use super::*;

    fn run(html: &str) -> (String, Vec<String>) {
        let mut s = Sink::new(&Limits::default());
        let v = tokenize(html, &mut s);
        (v, s.strings())
    }

    #[test]
    fn inline_tags_join_block_tags_split() {
        let (v, _) = run("<p>fr<b></b>ee</p><p>money</p>");
        assert!(v.contains("free"));
        assert!(v.contains("money"));
        assert!(!v.contains("freemoney"));
    }

    #[test]
    fn script_style_dropped_entities_decoded() {
        let (v, _) = run("<style>.x{color:red}</style>a&amp;b &#72;i<script>var x;</script>");
        assert_eq!(v.trim(), "a&b Hi");
    }

    #[test]
    fn cues_and_links() {
        let (_, t) = run("<div style='display: none'>x</div><img src=\"http://img.example.com/a.gif\">\
             <a href=\"https://click.example.net/go\">here</a><form><input></form><!-- c -->");
        for want in ["html:hidden-text", "html:img:1", "html:form", "html:comments:1", "url:host:click.example.net", "url:host:img.example.com"] {
            assert!(t.iter().any(|x| x == want), "missing {want} in {t:?}");
        }
    }

    #[test]
    fn text_after_an_unclosed_angle_bracket_is_kept_in_one_pass() {
        // Once no '>' follows, the rest is text: the scan does not restart at
        // every later '<' (which made a part full of '<' quadratic).
        let (v, _) = run("a <b>bold</b> x < y <<< z");
        assert_eq!(v, "a bold x < y <<< z");
    }

    #[test]
    fn broken_html_does_not_panic() {
        for h in ["<", "<<>>", "&", "&#xFFFFFFFF;", "<a href=", "<a href='x", "<!--", "<script>", "é<é>&é;"] {
            run(h);
        }
    }
}
