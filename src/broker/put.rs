//! `put`: checking a put (transaction key, checksum, attribute), choosing its partition,
//! creating its topic on first use, storing it and answering. A run of puts that arrived
//! together is stored with one [`Store::append_batch`](crate::store::Store::append_batch)
//! (one writer lock, the index misses of many partitions overlapped); the replies keep the
//! order and the exact bytes of puts answered one by one.

use super::{store_error, Broker, Outcome};
use crate::protocol::{self, Code, Put};
use crate::store::{self, Appended, Message, StoreError};

type Refusal = (Code, String);

impl Broker {
    /// Handles one put (counted in `cmd_put`).
    pub fn put_one(&mut self, p: &Put<'_>, body: &[u8], out: &mut Vec<u8>) -> Outcome {
        self.counters.cmd_put += 1;
        self.put(p, body, out)
    }

    /// Handles one put.
    pub(super) fn put(&mut self, p: &Put<'_>, body: &[u8], out: &mut Vec<u8>) -> Outcome {
        let result = self.put_message(p, body, store::now_ms()).and_then(|msg| {
            match self.store.append(&msg) {
                // A topic seen for the first time: create it, then store again.
                Err(StoreError::UnknownTopic) => {
                    self.create_topic(p.topic)?;
                    self.store.append(&msg).map_err(|e| append_refusal(p, e))
                }
                other => other.map_err(|e| append_refusal(p, e)),
            }
        });
        self.answer_put(p, result, out)
    }

    /// Handles `puts` (each with its body) in order: one store call for all of them, one
    /// reply each, appended to `out`. Pushes (where its reply starts in `out`, its outcome)
    /// per put onto `outcomes`.
    pub fn put_batch(
        &mut self,
        puts: &[(Put<'_>, &[u8])],
        out: &mut Vec<u8>,
        outcomes: &mut Vec<(usize, Outcome)>,
    ) {
        let mut checked: Vec<Result<Message<'_>, Refusal>> = Vec::with_capacity(puts.len());
        let mut known_topic: Option<&str> = None;
        let born_ts_ms = store::now_ms(); // they arrived together
        for (p, body) in puts {
            self.counters.cmd_put += 1;
            if known_topic != Some(p.topic) {
                if self.store.partitions(p.topic).is_none() {
                    if let Err(refusal) = self.create_topic(p.topic) {
                        checked.push(Err(refusal));
                        continue;
                    }
                }
                known_topic = Some(p.topic);
            }
            checked.push(self.put_message(p, body, born_ts_ms));
        }
        let msgs: Vec<Message<'_>> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok())
            .copied()
            .collect();
        let mut stored = Vec::with_capacity(msgs.len());
        self.store.append_batch(&msgs, &mut stored);
        let mut stored = stored.into_iter();
        for ((p, _), check) in puts.iter().zip(checked) {
            let result = check.and_then(|_| {
                let r = stored.next().expect("one store result per message");
                r.map_err(|e| append_refusal(p, e))
            });
            let start = out.len();
            let outcome = self.answer_put(p, result, out);
            outcomes.push((start, outcome));
        }
    }

    /// Checks a put and makes its message, born at `born_ts_ms` (the partition chosen when it
    /// is -1, creating the topic first if it is new).
    fn put_message<'a>(
        &mut self,
        p: &Put<'a>,
        body: &'a [u8],
        born_ts_ms: i64,
    ) -> Result<Message<'a>, Refusal> {
        if p.tx_key.is_some() {
            return Err((
                Code::NotImplemented,
                "transactions are not implemented".into(),
            ));
        }
        if let Some(sum) = p.checksum {
            if protocol::checksum(body) != sum {
                return Err((Code::BadRequest, "checksum mismatch".into()));
            }
        }
        let parts = protocol::split_put_body(p.flag, body, &self.cfg.limits)?;
        let partition = match p.partition {
            Some(n) => n,
            None => match self.store.choose_partition(p.topic) {
                Err(StoreError::UnknownTopic) => {
                    self.create_topic(p.topic)?;
                    self.store.choose_partition(p.topic)
                }
                chosen => chosen,
            }
            .map_err(|e| store_error(&e))?,
        };
        Ok(Message {
            topic: p.topic,
            partition,
            flag: p.flag,
            tag: parts.tag,
            props: parts.props,
            body: parts.payload,
            born_ts_ms,
        })
    }

    fn answer_put(
        &mut self,
        p: &Put<'_>,
        result: Result<Appended, Refusal>,
        out: &mut Vec<u8>,
    ) -> Outcome {
        match result {
            Ok(a) => {
                protocol::write_put_ok(out, a.msg_id, a.partition, a.offset, p.opaque);
                Outcome::Stored {
                    partition: a.partition,
                    end_pos: a.end_pos,
                    tag_hash: a.tag_hash,
                }
            }
            Err((code, text)) => {
                self.counters.put_errors += 1;
                self.reply(out, code, &text, p.opaque);
                Outcome::Done
            }
        }
    }
}

fn append_refusal(p: &Put<'_>, e: StoreError) -> Refusal {
    match e {
        StoreError::PartitionOutOfRange { partitions } => (
            Code::BadRequest,
            format!(
                "partition {} out of range, topic {} has {partitions} partitions",
                p.partition.unwrap_or(0),
                p.topic
            ),
        ),
        e => store_error(&e),
    }
}
