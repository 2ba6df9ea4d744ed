//! JSON Pointers (RFC 6901) and the three edits made through them: remove, set (creating
//! parents) and take (the first half of a rename).
//!
//! A repeated member name is one member to every edit: `remove` deletes every copy (a duplicate
//! `internal_id` must not survive a removal), `set` replaces the first and drops the others,
//! and `take` moves the last copy (the one most parsers read) and drops the others.

use std::fmt;

use crate::json::Value;

/// A parsed pointer: its reference tokens, unescaped. Never the whole document (`""`): a
/// transform edits members, it never replaces or deletes the body itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    tokens: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    #[error("the empty pointer names the whole body; name a member (`/field`)")]
    Root,
    #[error("a JSON Pointer starts with `/`")]
    NoSlash,
    #[error("`~` must be followed by `0` (for `~`) or `1` (for `/`)")]
    BadEscape,
}

impl Pointer {
    pub fn parse(text: &str) -> Result<Pointer, PointerError> {
        if text.is_empty() {
            return Err(PointerError::Root);
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PointerError::NoSlash);
        };
        let tokens = rest
            .split('/')
            .map(|t| {
                let mut out = String::with_capacity(t.len());
                let mut chars = t.chars();
                while let Some(c) = chars.next() {
                    if c == '~' {
                        match chars.next() {
                            Some('0') => out.push('~'),
                            Some('1') => out.push('/'),
                            _ => return Err(PointerError::BadEscape),
                        }
                    } else {
                        out.push(c);
                    }
                }
                Ok(out)
            })
            .collect::<Result<_, _>>()?;
        Ok(Pointer { tokens })
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// True when `self` is `other` or lies inside it (`/a/b` is under `/a`).
    pub fn is_under(&self, other: &Pointer) -> bool {
        self.tokens.starts_with(&other.tokens)
    }

    /// Deletes the member or element; absent: nothing happens.
    pub fn remove(&self, doc: &mut Value) {
        let (last, parents) = self.split();
        let Some(parent) = walk_mut(doc, parents) else {
            return;
        };
        match parent {
            Value::Object(members) => members.retain(|(k, _)| k != last),
            Value::Array(items) => {
                if let Some(i) = index(last, items.len()) {
                    items.remove(i);
                }
            }
            _ => {}
        }
    }

    /// Removes and returns the value (see the module doc for repeated names).
    pub fn take(&self, doc: &mut Value) -> Option<Value> {
        let (last, parents) = self.split();
        match walk_mut(doc, parents)? {
            Value::Object(members) => {
                let mut found = None;
                members.retain_mut(|(k, v)| {
                    if k == last {
                        found = Some(std::mem::replace(v, Value::Null));
                        false
                    } else {
                        true
                    }
                });
                found
            }
            Value::Array(items) => index(last, items.len()).map(|i| items.remove(i)),
            _ => None,
        }
    }

    /// Sets the member or element, creating missing parents as objects. An array element is
    /// replaced by its index or appended with `-` (or the index one past the end). Returns
    /// false, changing nothing, when a parent on the way is a string, number, boolean or null,
    /// or an array index is out of range: the body is not the shape the pointer expects.
    pub fn set(&self, doc: &mut Value, value: Value) -> bool {
        let (last, parents) = self.split();
        // Check the whole way first, so a refused set creates no parents.
        if !settable(doc, parents) {
            return false;
        }
        let mut cur = doc;
        for t in parents {
            cur = match cur {
                Value::Object(members) => {
                    let pos = match members.iter().position(|(k, _)| k == t) {
                        Some(p) => p,
                        None => {
                            members.push((t.clone(), Value::Object(Vec::new())));
                            members.len() - 1
                        }
                    };
                    &mut members[pos].1
                }
                Value::Array(items) => {
                    let i = index(t, items.len()).expect("checked by settable");
                    &mut items[i]
                }
                _ => unreachable!("checked by settable"),
            };
        }
        match cur {
            Value::Object(members) => {
                let mut seen = false;
                members.retain_mut(|(k, v)| {
                    if k != last {
                        return true;
                    }
                    if seen {
                        return false;
                    }
                    seen = true;
                    *v = value.clone();
                    true
                });
                if !seen {
                    members.push((last.clone(), value));
                }
                true
            }
            Value::Array(items) => {
                if last == "-" || last.parse::<usize>().ok() == Some(items.len()) && canonical(last)
                {
                    items.push(value);
                    true
                } else if let Some(i) = index(last, items.len()) {
                    items[i] = value;
                    true
                } else {
                    false
                }
            }
            _ => false,
        }
    }

    fn split(&self) -> (&String, &[String]) {
        let (last, parents) = self
            .tokens
            .split_last()
            .expect("a pointer has at least one token");
        (last, parents)
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in &self.tokens {
            write!(f, "/{}", t.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

/// An array index token: `0` or digits without a leading zero (RFC 6901 §4).
fn canonical(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && (t == "0" || !t.starts_with('0'))
}

fn index(t: &str, len: usize) -> Option<usize> {
    if !canonical(t) {
        return None;
    }
    t.parse::<usize>().ok().filter(|i| *i < len)
}

fn walk_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            // The first copy of a repeated name, as `set` keeps it.
            Value::Object(members) => &mut members.iter_mut().find(|(k, _)| k == t)?.1,
            Value::Array(items) => {
                let i = index(t, items.len())?;
                &mut items[i]
            }
            _ => return None,
        };
    }
    Some(cur)
}

fn settable(doc: &Value, tokens: &[String]) -> bool {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(members) => match members.iter().find(|(k, _)| k == t) {
                Some((_, v)) => v,
                // Created from here on.
                None => return true,
            },
            Value::Array(items) => match index(t, items.len()) {
                Some(i) => &items[i],
                None => return false,
            },
            _ => return false,
        };
    }
    matches!(cur, Value::Object(_) | Value::Array(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    fn doc(s: &str) -> Value {
        parse(s.as_bytes()).unwrap()
    }

    fn p(s: &str) -> Pointer {
        Pointer::parse(s).unwrap()
    }

    #[test]
    fn parses_rfc_6901_tokens() {
        assert_eq!(p("/a~1b/m~0n/").tokens(), ["a/b", "m~n", ""]);
        assert_eq!(p("/").tokens(), [""]);
        assert_eq!(Pointer::parse(""), Err(PointerError::Root));
        assert_eq!(Pointer::parse("a"), Err(PointerError::NoSlash));
        assert_eq!(Pointer::parse("/a~2"), Err(PointerError::BadEscape));
        assert_eq!(Pointer::parse("/a~"), Err(PointerError::BadEscape));
        assert_eq!(p("/a~1b/m~0n").to_string(), "/a~1b/m~0n");
        assert!(p("/a/b").is_under(&p("/a")));
        assert!(!p("/ab").is_under(&p("/a")));
    }

    #[test]
    fn remove_deletes_every_copy_and_ignores_what_is_absent() {
        let mut d = doc(r#"{"a":1,"x":2,"a":3,"n":{"b":[1,2,3]}}"#);
        p("/a").remove(&mut d);
        p("/n/b/1").remove(&mut d);
        p("/missing/deep").remove(&mut d);
        p("/n/b/01").remove(&mut d);
        p("/n/b/9").remove(&mut d);
        p("/x/y").remove(&mut d);
        assert_eq!(d.to_string(), r#"{"x":2,"n":{"b":[1,3]}}"#);
    }

    #[test]
    fn set_creates_parents_replaces_and_appends() {
        let mut d = doc(r#"{"a":1,"a":2,"l":[0]}"#);
        assert!(p("/a").set(&mut d, doc("\"x\"")));
        assert!(p("/new/deep/er").set(&mut d, doc("true")));
        assert!(p("/l/-").set(&mut d, doc("1")));
        assert!(p("/l/2").set(&mut d, doc("2")));
        assert!(p("/l/0").set(&mut d, doc("{}")));
        assert_eq!(
            d.to_string(),
            r#"{"a":"x","l":[{},1,2],"new":{"deep":{"er":true}}}"#
        );
        // Through a scalar or past an array's end: nothing changes.
        let before = d.clone();
        assert!(!p("/a/b").set(&mut d, doc("1")));
        assert!(!p("/l/9").set(&mut d, doc("1")));
        assert!(!p("/l/9/x").set(&mut d, doc("1")));
        assert!(!p("/l/1/x").set(&mut d, doc("1")));
        assert_eq!(d, before);
        // A scalar body has no members.
        let mut s = doc("3");
        assert!(!p("/a").set(&mut s, doc("1")));
    }

    #[test]
    fn take_moves_the_last_copy() {
        let mut d = doc(r#"{"a":1,"b":0,"a":2}"#);
        assert_eq!(p("/a").take(&mut d), Some(doc("2")));
        assert_eq!(d.to_string(), r#"{"b":0}"#);
        assert_eq!(p("/a").take(&mut d), None);
        let mut l = doc("[1,2]");
        assert_eq!(p("/0").take(&mut l), Some(doc("1")));
        assert_eq!(l.to_string(), "[2]");
    }
}
