//! Shape checks for script replies: every reply is parsed explicitly, and a
//! reply of the wrong shape is an [`Error::Reply`], never a panic.

use fred::types::Value;

use crate::error::{Error, Result};

pub(crate) struct Reply {
    pub(crate) script: &'static str,
}

impl Reply {
    pub(crate) fn err(&self, detail: impl Into<String>) -> Error {
        Error::Reply {
            script: self.script,
            detail: detail.into(),
        }
    }

    pub(crate) fn array(&self, v: Value) -> Result<Vec<Value>> {
        match v {
            Value::Array(items) => Ok(items),
            Value::Null => Ok(Vec::new()),
            other => Err(self.err(format!("expected an array, got {:?}", other.kind()))),
        }
    }

    pub(crate) fn string(&self, v: Value) -> Result<String> {
        match v {
            Value::String(s) => Ok(s.to_string()),
            Value::Bytes(b) => {
                String::from_utf8(b.to_vec()).map_err(|_| self.err("non-UTF-8 string"))
            }
            Value::Integer(i) => Ok(i.to_string()),
            Value::Double(d) => Ok(d.to_string()),
            other => Err(self.err(format!("expected a string, got {:?}", other.kind()))),
        }
    }

    pub(crate) fn int(&self, v: Value) -> Result<i64> {
        match v {
            Value::Integer(i) => Ok(i),
            Value::Double(d) => Ok(d as i64),
            Value::String(_) | Value::Bytes(_) => {
                let s = self.string(v)?;
                s.parse()
                    .map_err(|_| self.err(format!("expected an integer, got {s:?}")))
            }
            other => Err(self.err(format!("expected an integer, got {:?}", other.kind()))),
        }
    }

    /// The attempt tags of a maintenance reply (reap, timeout-stale).
    pub(crate) fn attempt_ends(
        &self,
        tags: Option<Value>,
    ) -> Result<Vec<super::outcome::AttemptEnd>> {
        tags.map(|v| self.array(v))
            .transpose()?
            .unwrap_or_default()
            .into_iter()
            .map(|tag| super::outcome::AttemptEnd::parse(self, &self.string(tag)?))
            .collect()
    }

    /// Splits a flat array into rows of `width`.
    pub(crate) fn rows(&self, v: Value, width: usize) -> Result<Vec<Vec<Value>>> {
        let items = self.array(v)?;
        if items.len() % width != 0 {
            return Err(self.err(format!(
                "{} items is not a multiple of {width}",
                items.len()
            )));
        }
        let mut rows = Vec::with_capacity(items.len() / width);
        let mut it = items.into_iter();
        loop {
            let row: Vec<Value> = it.by_ref().take(width).collect();
            if row.is_empty() {
                return Ok(rows);
            }
            rows.push(row);
        }
    }

    /// A flat HGETALL array as (field, value) string pairs.
    pub(crate) fn pairs(&self, v: Value) -> Result<Vec<(String, String)>> {
        self.rows(v, 2)?
            .into_iter()
            .map(|row| {
                let mut it = row.into_iter();
                match (it.next(), it.next()) {
                    (Some(f), Some(x)) => Ok((self.string(f)?, self.string(x)?)),
                    _ => Err(self.err("odd field/value array")),
                }
            })
            .collect()
    }

    /// The typed error of one batch item's refusal code; an unknown code is a
    /// reply of the wrong shape.
    pub(crate) fn item_refusal(&self, code: &str, id: &str) -> Result<Error> {
        super::scripts::refusal(&format!("{code} {id}"))
            .ok_or_else(|| self.err(format!("unknown code {code}")))
    }

    /// A batch script's reply: exactly one string code per item sent.
    pub(crate) fn codes(&self, v: Value, items: usize) -> Result<Vec<String>> {
        let codes = self.array(v)?;
        if codes.len() != items {
            return Err(self.err(format!(
                "one code per item expected: {} codes for {items} items",
                codes.len()
            )));
        }
        codes.into_iter().map(|code| self.string(code)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(n: usize) -> Value {
        Value::Array((0..n).map(|_| Value::String("ok".into())).collect())
    }

    #[test]
    fn a_batch_reply_needs_exactly_one_code_per_item() {
        let r = Reply { script: "requeue" };
        assert_eq!(
            r.codes(codes(2), 2).ok(),
            Some(vec!["ok".into(), "ok".into()])
        );
        for (got, sent) in [(1, 2), (3, 2), (0, 1)] {
            assert!(
                matches!(
                    r.codes(codes(got), sent),
                    Err(Error::Reply {
                        script: "requeue",
                        ..
                    })
                ),
                "{got} codes for {sent} items"
            );
        }
    }
}
