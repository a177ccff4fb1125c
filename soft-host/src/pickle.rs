//! A small pickle virtual machine for what `torch.save` writes (protocol 2, plus the
//! protocol-4 opcodes newer writers use). It builds a value tree and never executes
//! anything: globals stay names, calls stay `(callable, args)` pairs, so unknown classes
//! (e.g. `argparse.Namespace` in timm checkpoints) are data to skip, not errors.
//!
//! Written here because the pickle crates on crates.io do not surface persistent ids
//! (`BINPERSID`), which is how torch refers to tensor storages.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use anyhow::{bail, Context, Result};

/// A dictionary shared between the stack and the memo, so later `SETITEMS` are seen
/// through every reference (as in Python).
pub type SharedDict = Rc<RefCell<Vec<(Value, Value)>>>;
/// A shared list.
pub type SharedList = Rc<RefCell<Vec<Value>>>;

/// A pickled value.
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
    /// A tuple.
    Tuple(Rc<[Value]>),
    /// A list.
    List(SharedList),
    /// A dict, in insertion order.
    Dict(SharedDict),
    /// A class or function by name.
    Global {
        /// Module.
        module: Rc<str>,
        /// Name in the module.
        name: Rc<str>,
    },
    /// `callable(*args)` (REDUCE or NEWOBJ), not evaluated.
    Call(Rc<(Value, Value)>),
    /// `obj.__setstate__(state)` (BUILD), not evaluated.
    Build(Rc<(Value, Value)>),
    /// A persistent id (torch: a storage reference).
    PersistentId(Rc<Value>),
}
// Every variant is cheap to clone (reference counted), so `BINGET` of a large value
// costs one pointer: memory stays proportional to the pickle's length.

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

    /// Items of a tuple or list.
    pub fn items(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(v) => Some(v.to_vec()),
            Value::List(v) => Some(v.borrow().clone()),
            _ => None,
        }
    }
}

/// Most values on the stack or in the memo: bounds what a hostile file can make us hold.
const MAX_ITEMS: usize = 10_000_000;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<usize, Value>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.with_context(|| format!("pickle truncated at byte {}", self.pos))?;
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
        Ok(u64::from_le_bytes(b.try_into()?))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .context("pickle GLOBAL without newline")?;
        let s = std::str::from_utf8(&rest[..n])
            .context("pickle GLOBAL is not text")?
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
            bail!("pickle stack exceeds {MAX_ITEMS} items");
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            bail!("pickle pops past a MARK at byte {}", self.pos);
        }
        self.stack.pop().context("pickle stack underflow")
    }

    fn top(&mut self) -> Result<&mut Value> {
        self.stack.last_mut().context("pickle stack underflow")
    }

    /// Everything pushed since the last MARK.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self.marks.pop().context("pickle has no MARK to pop to")?;
        if m > self.stack.len() {
            bail!("pickle MARK beyond the stack");
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, index: usize) -> Result<()> {
        if self.memo.len() >= MAX_ITEMS {
            bail!("pickle memo exceeds {MAX_ITEMS} entries");
        }
        let v = self
            .stack
            .last()
            .context("pickle memoizes an empty stack")?
            .clone();
        self.memo.insert(index, v);
        Ok(())
    }

    fn memo_get(&mut self, index: usize) -> Result<()> {
        let v = self.memo.get(&index).cloned();
        let v = v.with_context(|| format!("pickle reads unset memo slot {index}"))?;
        self.push(v)
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        if items.len() % 2 != 0 {
            bail!("pickle SETITEMS with an odd number of values");
        }
        let Value::Dict(d) = self.top()? else {
            bail!("pickle SETITEMS on a non-dict")
        };
        let d = d.clone();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.borrow_mut().push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<()> {
        match self.top()? {
            Value::List(l) => l.borrow_mut().extend(items),
            _ => bail!("pickle APPEND on a non-list"),
        }
        Ok(())
    }

    fn call(&mut self, callable: Value, args: Value) -> Result<()> {
        // OrderedDict() is the one call whose result is later mutated (SETITEMS).
        let v = match callable.global() {
            Some(("collections", "OrderedDict")) => Value::Dict(Rc::default()),
            _ => Value::Call(Rc::new((callable, args))),
        };
        self.push(v)
    }

    fn run(mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        bail!("unsupported pickle protocol {proto}");
                    }
                }
                0x95 => {
                    self.u64()?;
                }
                b'}' => self.push(Value::Dict(Rc::default()))?,
                b']' => self.push(Value::List(Rc::default()))?,
                b')' => self.push(Value::Tuple(Rc::new([])))?,
                b'(' => {
                    if self.marks.len() >= MAX_ITEMS {
                        bail!("too many pickle MARKs");
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
                    let n = usize::try_from(self.u64()?)?;
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
                        _ => bail!("pickle STACK_GLOBAL with non-text names"),
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
                        bail!("pickle integer of {n} bytes is too large");
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
                    self.push(Value::Float(f64::from_be_bytes(b.try_into()?)))?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items.into()))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        bail!("pickle TUPLE{n} on a short stack");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Value::Tuple(items.into()))?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(Rc::new(RefCell::new(items))))?;
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
                    self.push(Value::Dict(Rc::default()))?;
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
                    let v = match obj {
                        Value::Dict(d) => Value::Dict(d),
                        obj => Value::Build(Rc::new((obj, state))),
                    };
                    self.push(v)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Value::PersistentId(Rc::new(pid)))?;
                }
                b'.' => return self.pop(),
                _ => bail!("unknown pickle opcode {op:#04x} at byte {at}"),
            }
        }
    }
}

/// Unpickles `data` into a value tree.
pub fn parse(data: &[u8]) -> Result<Value> {
    Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dict_filled_after_memoization_is_seen_through_the_memo() {
        // {'a': 1} memoized, then fetched again: [d, d]
        let p = b"\x80\x02]q\x00(}q\x01X\x01\x00\x00\x00aK\x01sh\x01e.";
        let v = parse(p).unwrap();
        let items = v.items().unwrap();
        assert_eq!(items.len(), 2);
        for d in items {
            let Value::Dict(d) = d else { panic!() };
            assert_eq!(d.borrow().len(), 1);
        }
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
    }

    #[test]
    fn ints_decode_with_sign() {
        let v = parse(b"\x80\x02(J\xff\xff\xff\xff\x8a\x02\x00\x80K\x07M\x00\x01t.").unwrap();
        let ints: Vec<i64> = v
            .items()
            .unwrap()
            .iter()
            .map(|x| x.as_int().unwrap())
            .collect();
        assert_eq!(ints, vec![-1, -32768, 7, 256]);
    }
}
