//! A small YAML document tree that remembers where every node came from, so that decoding errors
//! can name a line and column.
//!
//! yaml-rust2's own `Yaml` type drops positions, so we build our own tree from its marked event
//! stream. Scalars keep their source text and how they were written (plain or quoted): the
//! decoder needs both, because `port: "8080"` (a string) must be rejected where `port: 8080` is
//! accepted, and a header value written as `1.10` must stay `1.10` rather than become a float.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// The start of the file, used for problems that belong to no particular node.
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn from_marker(m: &Marker) -> Pos {
        // yaml-rust2 counts lines from 1 but columns from 0.
        Pos {
            line: m.line().max(1),
            column: m.col() + 1,
        }
    }
}

/// How a scalar resolves under the YAML 1.2 core schema (quoted scalars are always strings).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A plain (unquoted) string.
    Str,
    /// A quoted or block string, or one tagged `!!str`.
    Quoted,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar {
        text: String,
        kind: Scalar,
    },
    Seq(Vec<Node>),
    /// Entries in file order; duplicates are kept so the decoder can report them.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

impl Node {
    /// The text of a scalar that reads as a string in a config file: plain strings, quoted
    /// strings, and plain numbers or booleans (a header value `1` means the text "1").
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar {
                kind: Scalar::Null, ..
            } => None,
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A short description for "found …" in error messages.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Seq(_) => "a list".to_string(),
            Value::Map(_) => "a mapping".to_string(),
            Value::Scalar { text, kind } => match kind {
                Scalar::Null => "an empty value".to_string(),
                Scalar::Bool(_) => format!("the boolean {text}"),
                Scalar::Int(_) => format!("the integer {text}"),
                Scalar::Float(_) => format!("the number {text}"),
                Scalar::Str => format!("\"{}\"", shorten(text)),
                Scalar::Quoted => format!("the quoted string \"{}\"", shorten(text)),
            },
        }
    }

    /// Number of nodes in this subtree; bounds alias expansion.
    fn size(&self) -> usize {
        match &self.value {
            Value::Scalar { .. } => 1,
            Value::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Value::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }
}

/// Long values would drown the message; the position already says where to look.
fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// A syntax problem, positioned where the scanner or our builder noticed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Nesting deeper than this is rejected: nothing in gateway.yaml needs it, and recursive code
/// (decoding, JSON conversion, even dropping the tree) must not overflow the stack on hostile input.
const MAX_DEPTH: usize = 64;

/// Aliases copy subtrees; this bounds the total copied so a "billion laughs" file cannot exhaust
/// memory.
const MAX_ALIAS_NODES: usize = 100_000;

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// Parses one YAML document. An empty file yields `None`.
pub fn parse(src: &str) -> Result<Option<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(src);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut alias_nodes = 0usize;
    let mut root: Option<Node> = None;
    let mut documents = 0usize;

    loop {
        let (event, marker) = parser.next_token().map_err(|e| SyntaxError {
            pos: Pos::from_marker(e.marker()),
            message: format!("invalid YAML: {}", e.info()),
        })?;
        let pos = Pos::from_marker(&marker);
        let (node, anchor) = match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError {
                        pos,
                        message: "found a second YAML document (`---`); gateway.yaml must hold \
                                  exactly one"
                            .to_string(),
                    });
                }
                continue;
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::Alias(id) => {
                let Some(target) = anchors.get(&id) else {
                    return Err(SyntaxError {
                        pos,
                        message: "unknown alias".to_string(),
                    });
                };
                alias_nodes += target.size();
                if alias_nodes > MAX_ALIAS_NODES {
                    return Err(SyntaxError {
                        pos,
                        message: format!(
                            "aliases expand to more than {MAX_ALIAS_NODES} nodes; refusing to \
                             expand further"
                        ),
                    });
                }
                let mut node = target.clone();
                node.pos = pos;
                (node, 0)
            }
            Event::Scalar(text, style, anchor, tag) => {
                let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let kind = if style != TScalarStyle::Plain || is_str_tag {
                    Scalar::Quoted
                } else {
                    resolve_plain(&text)
                };
                (
                    Node {
                        pos,
                        value: Value::Scalar { text, kind },
                    },
                    anchor,
                )
            }
            Event::SequenceStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(too_deep(pos));
                }
                stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                });
                continue;
            }
            Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(too_deep(pos));
                }
                stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { pos, anchor, items }) => (
                    Node {
                        pos,
                        value: Value::Seq(items),
                    },
                    anchor,
                ),
                _ => return Err(unbalanced(pos)),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    pos,
                    anchor,
                    entries,
                    key: None,
                }) => {
                    // The parser marks a block mapping's start just after its first key; the
                    // first key itself is the better place to point at.
                    let pos = entries.first().map_or(pos, |(k, _)| k.pos.min(pos));
                    (
                        Node {
                            pos,
                            value: Value::Map(entries),
                        },
                        anchor,
                    )
                }
                _ => return Err(unbalanced(pos)),
            },
        };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    let mut value = node;
                    // An empty value (`key:` then a newline) is marked on the following line;
                    // pointing at the key is clearer.
                    if matches!(&value.value, Value::Scalar { text, kind: Scalar::Null } if text.is_empty())
                    {
                        value.pos = k.pos;
                    }
                    entries.push((k, value));
                }
            },
        }
    }
    Ok(root)
}

fn too_deep(pos: Pos) -> SyntaxError {
    SyntaxError {
        pos,
        message: format!("nesting deeper than {MAX_DEPTH} levels"),
    }
}

fn unbalanced(pos: Pos) -> SyntaxError {
    // The parser guarantees balanced events; this is only here so that a parser bug cannot panic.
    SyntaxError {
        pos,
        message: "invalid YAML: unbalanced collection".to_string(),
    }
}

/// The YAML 1.2 core schema for plain scalars.
fn resolve_plain(text: &str) -> Scalar {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return i64::from_str_radix(hex, 16).map_or(Scalar::Str, Scalar::Int);
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return i64::from_str_radix(oct, 8).map_or(Scalar::Str, Scalar::Int);
        }
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(i) => Scalar::Int(i),
            // Too large for i64: still a number, never a string.
            Err(_) => text.parse::<f64>().map_or(Scalar::Str, Scalar::Float),
        };
    }
    if is_float(digits) {
        if let Ok(f) = text.parse::<f64>() {
            return Scalar::Float(f);
        }
    }
    Scalar::Str
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` without the sign.
fn is_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => all_digits(int) && all_digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && all_digits(int),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok && (frac.is_some() || exponent.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_kind(src: &str) -> Scalar {
        match parse(src).ok().flatten().map(|n| n.value) {
            Some(Value::Scalar { kind, .. }) => kind,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn resolves_plain_scalars_like_yaml_1_2_core() {
        let cases = [
            ("~", Scalar::Null),
            ("true", Scalar::Bool(true)),
            ("False", Scalar::Bool(false)),
            ("8080", Scalar::Int(8080)),
            ("-3", Scalar::Int(-3)),
            ("0x1F", Scalar::Int(31)),
            ("0o17", Scalar::Int(15)),
            ("1.5", Scalar::Float(1.5)),
            ("1e3", Scalar::Float(1000.0)),
            ("\"8080\"", Scalar::Quoted),
            ("'x'", Scalar::Quoted),
            ("!!str 5", Scalar::Quoted),
            ("5s", Scalar::Str),
            ("yes", Scalar::Str),
            ("127.0.0.1:80", Scalar::Str),
            ("1.2.3", Scalar::Str),
        ];
        for (src, want) in cases {
            assert_eq!(scalar_kind(src), want, "{src}");
        }
    }

    #[test]
    fn positions_are_one_based_and_point_at_keys() {
        let root = parse("a: 1\nb:\n  c: [x, {d: e}]\nf:\n").unwrap().unwrap();
        assert_eq!(root.pos, Pos { line: 1, column: 1 });
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        assert_eq!(entries[1].0.pos, Pos { line: 2, column: 1 });
        assert_eq!(entries[1].1.pos, Pos { line: 3, column: 3 });
        let Value::Map(inner) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(inner[0].1.pos, Pos { line: 3, column: 6 });
        let Value::Seq(items) = &inner[0].1.value else {
            panic!()
        };
        assert_eq!(
            items[1].pos,
            Pos {
                line: 3,
                column: 10
            }
        );
        // An empty value points at its key.
        assert_eq!(entries[2].1.pos, Pos { line: 4, column: 1 });
    }

    #[test]
    fn aliases_are_expanded() {
        let root = parse("a: &x {b: 1}\nc: *x\n").unwrap().unwrap();
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        assert_eq!(entries[0].1.value, entries[1].1.value);
        assert_eq!(entries[1].1.pos, Pos { line: 2, column: 4 });
    }

    #[test]
    fn rejects_alias_bombs_multiple_documents_and_deep_nesting() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse(&bomb).unwrap_err().message.contains("aliases"));
        assert_eq!(parse("a: 1\n---\nb: 2\n").unwrap_err().pos.line, 2);
        let deep = "[".repeat(10_000);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn syntax_errors_carry_the_scanner_position() {
        let e = parse("a: [1\nb: 2").unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, column: 2 });
        assert!(e.message.starts_with("invalid YAML"));
    }
}
