//! A small pickle virtual machine for what `torch.save` writes (protocol 2, plus the
//! protocol-4 opcodes newer writers use). It builds a value graph and never executes
//! anything: globals stay names, calls stay `(callable, args)` pairs, so unknown classes
//! (e.g. `argparse.Namespace` in timm checkpoints) are data to skip, not errors.
//!
//! Written here because the pickle crates on crates.io do not surface persistent ids
//! (`BINPERSID`), which is how torch refers to tensor storages.
//!
//! Containers live in one table ([`Pickle`]) and values refer to them by index. A hostile
//! pickle can build cycles (a dict that holds itself) and million-deep nesting; with
//! indices instead of reference-counted pointers, cycles cannot leak and dropping the
//! graph never recurses.

use std::collections::HashMap;
use std::rc::Rc;

use crate::error::{Error, OrFail, Result};
use crate::fail;

/// A container's index in [`Pickle`]'s node table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeId(usize);

/// A pickled value. Scalars and text are held directly; containers by [`NodeId`].
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`.
    None,
    /// `True`/`False`.
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Str(Rc<str>),
    /// Raw bytes.
    Bytes(Rc<[u8]>),
    /// A class or function by name.
    Global {
        /// Module.
        module: Rc<str>,
        /// Name in the module.
        name: Rc<str>,
    },
    /// A container in the node table.
    Node(NodeId),
}
// Every variant is cheap to clone (an index or a reference count), so `BINGET` of a large
// value costs one word: memory stays proportional to the pickle's length.

/// A container value.
#[derive(Debug)]
pub enum Node {
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list. Shared by index, so a later `APPEND` is seen through every reference.
    List(Vec<Value>),
    /// A dict, in insertion order; shared like a list.
    Dict(Vec<(Value, Value)>),
    /// `callable(*args)` (REDUCE or NEWOBJ), not evaluated.
    Call {
        /// What is called.
        callable: Value,
        /// Its argument tuple.
        args: Value,
    },
    /// `object.__setstate__(state)` (BUILD), not evaluated.
    Build {
        /// The object.
        object: Value,
        /// Its state.
        state: Value,
    },
    /// A persistent id (torch: a storage reference).
    PersistentId(Value),
}

impl Value {
    /// The global's `(module, name)` if this is one.
    pub fn global(&self) -> Option<(&str, &str)> {
        match self {
            Value::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    /// Text, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Integer, if this is one (or a bool).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
}

/// An unpickled value graph: the root and the containers it reaches.
#[derive(Debug)]
pub struct Pickle {
    nodes: Vec<Node>,
    root: Value,
}

impl Pickle {
    /// The value the pickle's `STOP` returned.
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// The container `v` refers to, if it is one.
    pub fn node(&self, v: &Value) -> Option<&Node> {
        match v {
            Value::Node(NodeId(i)) => self.nodes.get(*i),
            _ => None,
        }
    }

    /// Items of a tuple or list.
    pub fn items(&self, v: &Value) -> Option<&[Value]> {
        match self.node(v)? {
            Node::Tuple(items) | Node::List(items) => Some(items),
            _ => None,
        }
    }

    /// Entries of a dict.
    pub fn dict(&self, v: &Value) -> Option<&[(Value, Value)]> {
        match self.node(v)? {
            Node::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// `(callable, args)` of a call.
    pub fn call(&self, v: &Value) -> Option<(&Value, &Value)> {
        match self.node(v)? {
            Node::Call { callable, args } => Some((callable, args)),
            _ => None,
        }
    }

    /// The id inside a persistent reference.
    pub fn persistent_id(&self, v: &Value) -> Option<&Value> {
        match self.node(v)? {
            Node::PersistentId(pid) => Some(pid),
            _ => None,
        }
    }
}

/// Most values on the stack, in the memo or in the node table: bounds what a hostile file
/// can make us hold.
const MAX_ITEMS: usize = 10_000_000;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<usize, Value>,
    nodes: Vec<Node>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.or_fail_with(Error::Checkpoint, || {
            format!("pickle truncated at byte {}", self.pos)
        })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().or_fail(Error::Checkpoint, "pickle u64")?,
        ))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .or_fail(Error::Checkpoint, "pickle GLOBAL without newline")?;
        let s = std::str::from_utf8(&rest[..n])
            .or_fail(Error::Checkpoint, "pickle GLOBAL is not text")?
            .to_string();
        self.pos += n + 1;
        Ok(s)
    }

    fn text(&mut self, n: usize) -> Result<Value> {
        let b = self.take(n)?;
        Ok(Value::Str(String::from_utf8_lossy(b).into()))
    }

    fn push(&mut self, v: Value) -> Result<()> {
        if self.stack.len() >= MAX_ITEMS {
            fail!(Checkpoint, "pickle stack exceeds {MAX_ITEMS} items");
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            fail!(Checkpoint, "pickle pops past a MARK at byte {}", self.pos);
        }
        self.stack
            .pop()
            .or_fail(Error::Checkpoint, "pickle stack underflow")
    }

    /// Everything pushed since the last MARK.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self
            .marks
            .pop()
            .or_fail(Error::Checkpoint, "pickle has no MARK to pop to")?;
        if m > self.stack.len() {
            fail!(Checkpoint, "pickle MARK beyond the stack");
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, index: usize) -> Result<()> {
        if self.memo.len() >= MAX_ITEMS {
            fail!(Checkpoint, "pickle memo exceeds {MAX_ITEMS} entries");
        }
        let v = self
            .stack
            .last()
            .or_fail(Error::Checkpoint, "pickle memoizes an empty stack")?
            .clone();
        self.memo.insert(index, v);
        Ok(())
    }

    fn memo_get(&mut self, index: usize) -> Result<()> {
        let v = self.memo.get(&index).cloned();
        let v = v.or_fail_with(Error::Checkpoint, || {
            format!("pickle reads unset memo slot {index}")
        })?;
        self.push(v)
    }

    /// Adds a container to the table and pushes a reference to it.
    fn push_node(&mut self, node: Node) -> Result<()> {
        if self.nodes.len() >= MAX_ITEMS {
            fail!(Checkpoint, "pickle builds more than {MAX_ITEMS} containers");
        }
        self.nodes.push(node);
        self.push(Value::Node(NodeId(self.nodes.len() - 1)))
    }

    /// The container on top of the stack, for the opcodes that mutate it in place.
    fn top_node(&mut self) -> Result<&mut Node> {
        let Some(Value::Node(NodeId(i))) = self.stack.last() else {
            fail!(
                Checkpoint,
                "pickle mutates a value that is not a container at byte {}",
                self.pos
            )
        };
        let i = *i;
        self.nodes
            .get_mut(i)
            .or_fail(Error::Checkpoint, "pickle node index out of range")
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            fail!(Checkpoint, "pickle SETITEMS with an odd number of values");
        }
        let Node::Dict(entries) = self.top_node()? else {
            fail!(Checkpoint, "pickle SETITEMS on a non-dict")
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            entries.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<()> {
        match self.top_node()? {
            Node::List(list) => list.extend(items),
            _ => fail!(Checkpoint, "pickle APPEND on a non-list"),
        }
        Ok(())
    }

    fn call(&mut self, callable: Value, args: Value) -> Result<()> {
        // OrderedDict() is the one call whose result is later mutated (SETITEMS).
        match callable.global() {
            Some(("collections", "OrderedDict")) => self.push_node(Node::Dict(Vec::new())),
            _ => self.push_node(Node::Call { callable, args }),
        }
    }

    fn run(mut self) -> Result<Pickle> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        fail!(Checkpoint, "unsupported pickle protocol {proto}");
                    }
                }
                0x95 => {
                    self.u64()?;
                }
                b'}' => self.push_node(Node::Dict(Vec::new()))?,
                b']' => self.push_node(Node::List(Vec::new()))?,
                b')' => self.push_node(Node::Tuple(Vec::new()))?,
                b'(' => {
                    if self.marks.len() >= MAX_ITEMS {
                        fail!(Checkpoint, "too many pickle MARKs");
                    }
                    self.marks.push(self.stack.len());
                }
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(usize::from(i))?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i as usize)?;
                }
                0x94 => {
                    let i = self.memo.len();
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(usize::from(i))?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i as usize)?;
                }
                b'X' | b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let v = if op == b'B' {
                        Value::Bytes(self.take(n)?.into())
                    } else {
                        self.text(n)?
                    };
                    self.push(v)?;
                }
                0x8c | b'U' | b'C' => {
                    let n = usize::from(self.u8()?);
                    let v = if op == b'C' {
                        Value::Bytes(self.take(n)?.into())
                    } else {
                        self.text(n)?
                    };
                    self.push(v)?;
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?)
                        .or_fail(Error::Checkpoint, "pickle string length")?;
                    let v = self.text(n)?;
                    self.push(v)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global {
                        module: module.into(),
                        name: name.into(),
                    })?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => {
                            self.push(Value::Global { module, name })?
                        }
                        _ => fail!(Checkpoint, "pickle STACK_GLOBAL with non-text names"),
                    }
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.push(Value::Int(i64::from(u16::from_le_bytes([b[0], b[1]]))))?;
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(i64::from(v)))?;
                }
                0x8a => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    if n > 8 {
                        fail!(Checkpoint, "pickle integer of {n} bytes is too large");
                    }
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= i64::from(byte) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.push(Value::Int(v))?;
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.push(Value::Float(f64::from_be_bytes(
                        b.try_into().or_fail(Error::Checkpoint, "pickle float")?,
                    )))?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Tuple(items))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        fail!(Checkpoint, "pickle TUPLE{n} on a short stack");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_node(Node::Tuple(items))?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::List(items))?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Dict(Vec::new()))?;
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.call(callable, args)?;
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.pop()?;
                    // A dict subclass rebuilt by state keeps its identity for later readers.
                    let is_dict = matches!(
                        obj,
                        Value::Node(NodeId(i)) if matches!(self.nodes.get(i), Some(Node::Dict(_)))
                    );
                    if is_dict {
                        self.push(obj)?;
                    } else {
                        self.push_node(Node::Build { object: obj, state })?;
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push_node(Node::PersistentId(pid))?;
                }
                b'.' => {
                    let root = self.pop()?;
                    return Ok(Pickle {
                        nodes: self.nodes,
                        root,
                    });
                }
                _ => fail!(Checkpoint, "unknown pickle opcode {op:#04x} at byte {at}"),
            }
        }
    }
}

/// Unpickles `data` into a value graph.
pub fn parse(data: &[u8]) -> Result<Pickle> {
    Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        nodes: Vec::new(),
    }
    .run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dict_filled_after_memoization_is_seen_through_the_memo() {
        // {'a': 1} memoized, then fetched again: [d, d]
        let p = parse(b"\x80\x02]q\x00(}q\x01X\x01\x00\x00\x00aK\x01sh\x01e.").unwrap();
        let items = p.items(p.root()).unwrap();
        assert_eq!(items.len(), 2);
        for d in items {
            let entries = p.dict(d).unwrap();
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].0.as_str(), Some("a"));
        }
    }

    #[test]
    fn a_dict_that_holds_itself_is_a_graph_not_a_leak() {
        // The fuzzer's find: d = {}; d[0x7d7d] = d, among others. With reference-counted
        // containers this was a cycle that was never freed.
        let p = parse(b"}\x94M}}j\x00\x00\x00\x00s.").unwrap();
        let entries = p.dict(p.root()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0.as_int(), Some(0x7d7d));
        assert!(matches!(entries[0].1, Value::Node(_)));
        assert_eq!(p.dict(&entries[0].1).unwrap().len(), 1);
    }

    #[test]
    fn deep_nesting_builds_and_drops_without_recursion() {
        // ((((...)))) a million deep: one byte per level.
        let mut data = vec![b')'];
        data.resize(1_000_001, 0x85);
        data.push(b'.');
        let p = parse(&data).unwrap();
        let mut v = p.root().clone();
        let mut depth = 0;
        while let Some([inner]) = p.items(&v) {
            v = inner.clone();
            depth += 1;
        }
        assert_eq!(depth, 1_000_000);
        drop(p);
    }

    #[test]
    fn bad_pickles_are_errors() {
        assert!(parse(b"\x80\x02\xff")
            .unwrap_err()
            .to_string()
            .contains("unknown pickle opcode 0xff"));
        assert!(parse(b"\x80\x02").is_err());
        assert!(parse(b"\x80\x02h\x05.").is_err());
        assert!(parse(b"\x80\x02s.").is_err());
        assert!(parse(b"\x80\x02X\xff\xff\xff\xff").is_err());
        assert!(parse(b"(.").is_err());
        // Mutating opcodes on scalars.
        assert!(parse(b"K\x01K\x02K\x03s.").is_err());
        assert!(parse(b"K\x01K\x02a.").is_err());
    }

    #[test]
    fn ints_decode_with_sign() {
        let p = parse(b"\x80\x02(J\xff\xff\xff\xff\x8a\x02\x00\x80K\x07M\x00\x01t.").unwrap();
        let ints: Vec<i64> = p
            .items(p.root())
            .unwrap()
            .iter()
            .map(|x| x.as_int().unwrap())
            .collect();
        assert_eq!(ints, vec![-1, -32768, 7, 256]);
    }
}
