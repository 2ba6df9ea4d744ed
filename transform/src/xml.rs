//! JSON → XML (spec §9 `xml: true`). The document's root element is `<response>`; an object's
//! members become child elements in member order; an array repeats its element once per item
//! (`{"tag":["a","b"]}` is `<tag>a</tag><tag>b</tag>`; items of an array inside an array, and of
//! a top-level array, are `<item>`); `null`, `{}` and `""` are empty elements; numbers, booleans
//! and strings are text. A member name that is not an XML name is escaped character by
//! character as `_xHHHH_` (the character's code point, 4 or 8 upper-case hex digits, as .NET's
//! `XmlConvert.EncodeName`), and so is a `_` that would otherwise start such a sequence; `:` is
//! escaped too (no namespaces), and so is the `x` of a leading `xml` (names starting with `xml`
//! are reserved). Characters XML 1.0 cannot carry at all (most C0 controls, U+FFFE, U+FFFF)
//! become U+FFFD in text.

use crate::json::Value;

/// The root element of every document.
pub const ROOT: &str = "response";
/// The element of an array item that has no member name of its own.
pub const ITEM: &str = "item";

pub fn to_xml(v: &Value) -> Vec<u8> {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    match v {
        Value::Array(items) => {
            open(ROOT, &mut out);
            array(ITEM, items, &mut out);
            close(ROOT, &mut out);
        }
        other => element(ROOT, other, &mut out),
    }
    out.into_bytes()
}

/// Writes `v` as element(s) named `name` (already a valid XML name).
fn element(name: &str, v: &Value, out: &mut String) {
    match v {
        Value::Array(items) => array(name, items, out),
        Value::Null => empty(name, out),
        Value::Object(members) if members.is_empty() => empty(name, out),
        Value::Object(members) => {
            open(name, out);
            for (k, v) in members {
                element(&encode_name(k), v, out);
            }
            close(name, out);
        }
        Value::String(s) if s.is_empty() => empty(name, out),
        Value::String(s) => {
            open(name, out);
            text(s, out);
            close(name, out);
        }
        Value::Number(n) => {
            open(name, out);
            out.push_str(n);
            close(name, out);
        }
        Value::Bool(b) => {
            open(name, out);
            out.push_str(if *b { "true" } else { "false" });
            close(name, out);
        }
    }
}

/// One `name` element per item; an array in an array is one element holding `<item>`s.
fn array(name: &str, items: &[Value], out: &mut String) {
    for item in items {
        match item {
            Value::Array(inner) => {
                open(name, out);
                array(ITEM, inner, out);
                close(name, out);
            }
            other => element(name, other, out),
        }
    }
}

fn open(name: &str, out: &mut String) {
    out.push('<');
    out.push_str(name);
    out.push('>');
}

fn close(name: &str, out: &mut String) {
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

fn empty(name: &str, out: &mut String) {
    out.push('<');
    out.push_str(name);
    out.push_str("/>");
}

fn text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // A literal CR would be read back as LF (XML end-of-line handling).
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
}

/// XML 1.0 `Char`.
fn is_xml_char(c: char) -> bool {
    matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// XML 1.0 (5th edition) `NameStartChar`, without `:`.
fn is_name_start(c: char) -> bool {
    matches!(c as u32,
        0x41..=0x5A | 0x5F | 0x61..=0x7A | 0xC0..=0xD6 | 0xD8..=0xF6 | 0xF8..=0x2FF
        | 0x370..=0x37D | 0x37F..=0x1FFF | 0x200C..=0x200D | 0x2070..=0x218F
        | 0x2C00..=0x2FEF | 0x3001..=0xD7FF | 0xF900..=0xFDCF | 0xFDF0..=0xFFFD
        | 0x10000..=0xEFFFF)
}

/// XML 1.0 `NameChar`, without `:`.
fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c as u32, 0x2D | 0x2E | 0x30..=0x39 | 0xB7 | 0x300..=0x36F | 0x203F..=0x2040)
}

fn escape(c: char, out: &mut String) {
    let code = c as u32;
    if code <= 0xFFFF {
        out.push_str(&format!("_x{code:04X}_"));
    } else {
        out.push_str(&format!("_x{code:08X}_"));
    }
}

/// A JSON member name as an XML element name (see the module doc); the empty name is `_`.
pub fn encode_name(name: &str) -> String {
    if name.is_empty() {
        return "_".to_string();
    }
    let chars: Vec<char> = name.chars().collect();
    let reserved = chars.len() >= 3
        && chars[..3]
            .iter()
            .collect::<String>()
            .eq_ignore_ascii_case("xml");
    let mut out = String::with_capacity(name.len());
    for (i, &c) in chars.iter().enumerate() {
        let ok = if i == 0 {
            is_name_start(c) && !reserved
        } else {
            is_name_char(c)
        };
        // `_x` followed by four hex digits and `_` would read as an escape.
        let looks_escaped = c == '_' && starts_escape(&chars[i + 1..]);
        if ok && !looks_escaped {
            out.push(c);
        } else {
            escape(c, &mut out);
        }
    }
    out
}

fn starts_escape(rest: &[char]) -> bool {
    let hex = |n: usize| {
        rest.len() > n
            && rest[0] == 'x'
            && rest[1..=n].iter().all(|c| c.is_ascii_hexdigit())
            && rest.get(n + 1) == Some(&'_')
    };
    hex(4) || hex(8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    fn xml(s: &str) -> String {
        String::from_utf8(to_xml(&parse(s.as_bytes()).unwrap())).unwrap()
    }

    const DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";

    #[test]
    fn objects_arrays_and_scalars() {
        assert_eq!(
            xml(r#"{"id":7,"tags":["a","b"],"m":{"ok":true,"n":null},"e":"","o":{},"l":[]}"#),
            format!("{DECL}<response><id>7</id><tags>a</tags><tags>b</tags><m><ok>true</ok><n/></m><e/><o/></response>")
        );
        assert_eq!(
            xml(r#"[1,[2,3],{"a":"<&>"}]"#),
            format!("{DECL}<response><item>1</item><item><item>2</item><item>3</item></item><item><a>&lt;&amp;&gt;</a></item></response>")
        );
        assert_eq!(xml("\"x\""), format!("{DECL}<response>x</response>"));
        assert_eq!(
            xml(r#""a\r\u0001b""#),
            format!("{DECL}<response>a&#13;\u{FFFD}b</response>")
        );
    }

    #[test]
    fn names_that_are_not_xml_names_are_escaped() {
        let cases = [
            ("name", "name"),
            ("full name", "full_x0020_name"),
            ("1st", "_x0031_st"),
            ("a:b", "a_x003A_b"),
            ("xmlns", "_x0078_mlns"),
            ("XMLthing", "_x0058_MLthing"),
            ("-x", "_x002D_x"),
            ("é.ü-3", "é.ü-3"),
            ("😀", "😀"),
            ("\u{F0000}", "_x000F0000_"),
            ("a\u{1}", "a_x0001_"),
            ("a_x0020_b", "a_x005F_x0020_b"),
            ("_", "_"),
            ("", "_"),
            ("a<b>", "a_x003C_b_x003E_"),
        ];
        for (json, want) in cases {
            assert_eq!(encode_name(json), want, "{json:?}");
        }
    }
}
