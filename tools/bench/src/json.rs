//! A minimal JSON object writer for the one-line-per-run output.

use std::fmt::Write;

#[derive(Clone, Debug)]
pub enum J {
    Str(String),
    Num(f64),
    Int(i64),
    Bool(bool),
    Null,
    Obj(Obj),
    Arr(Vec<J>),
}

#[derive(Clone, Debug, Default)]
pub struct Obj(pub Vec<(String, J)>);

impl Obj {
    pub fn new() -> Obj {
        Obj(Vec::new())
    }
    pub fn set(&mut self, k: &str, v: J) -> &mut Obj {
        if let Some(slot) = self.0.iter_mut().find(|(n, _)| n == k) {
            slot.1 = v;
        } else {
            self.0.push((k.to_owned(), v));
        }
        self
    }
    pub fn s(&mut self, k: &str, v: impl Into<String>) -> &mut Obj {
        self.set(k, J::Str(v.into()))
    }
    pub fn f(&mut self, k: &str, v: f64) -> &mut Obj {
        self.set(k, if v.is_finite() { J::Num(v) } else { J::Null })
    }
    pub fn i(&mut self, k: &str, v: i64) -> &mut Obj {
        self.set(k, J::Int(v))
    }
    pub fn b(&mut self, k: &str, v: bool) -> &mut Obj {
        self.set(k, J::Bool(v))
    }
    pub fn o(&mut self, k: &str, v: Obj) -> &mut Obj {
        self.set(k, J::Obj(v))
    }
    pub fn get(&self, k: &str) -> Option<&J> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v)
    }
    pub fn num(&self, k: &str) -> Option<f64> {
        match self.get(k)? {
            J::Num(x) => Some(*x),
            J::Int(x) => Some(*x as f64),
            _ => None,
        }
    }
    pub fn render(&self) -> String {
        let mut out = String::new();
        render_obj(self, &mut out);
        out
    }
}

fn render_obj(o: &Obj, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in o.0.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        render_str(k, out);
        out.push(':');
        render(v, out);
    }
    out.push('}');
}

fn render(v: &J, out: &mut String) {
    match v {
        J::Str(s) => render_str(s, out),
        J::Num(x) => {
            if x.fract() == 0.0 && x.abs() < 1e15 {
                let _ = write!(out, "{}", *x as i64);
            } else {
                let _ = write!(out, "{:.3}", x);
            }
        }
        J::Int(x) => {
            let _ = write!(out, "{x}");
        }
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Null => out.push_str("null"),
        J::Obj(o) => render_obj(o, out),
        J::Arr(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render(v, out);
            }
            out.push(']');
        }
    }
}

fn render_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
