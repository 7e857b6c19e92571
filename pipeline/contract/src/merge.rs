//! The order in which a stage that reads several topics sees them, the same in both runners.
//!
//! Every message carries a **sequence number** (`seq`): the position of the source input it
//! descends from (in the embedded runner, the source batch; over Kafka, the `metrics.raw`
//! offset normalise read, per partition). A stage gives its outputs the seq of the input it
//! was processing, and says how far it has got with **progress** marks ("every output of
//! seq <= s is out"). A stage with several inputs then processes messages in `(seq, input)`
//! order, inputs ranked as the pipeline derives them (`metrics.norm` before what is made from
//! it): a forecast of step t never overtakes the sample of step t it came from, however the
//! threads or services that made them were scheduled. The order does not depend on timing,
//! so the stage's decisions do not either, and a fleet of services decides what one process
//! decides.
//!
//! [`Merge`] holds each input's messages until no earlier one can still arrive: the buffer a
//! Kafka Streams task keeps per partition, without its wall-clock guess (Kafka transports
//! the progress instead). What bounds the buffer is the runner's business: the embedded
//! runner's mailboxes bound how far one producer runs ahead of another; a service releases
//! the oldest message when it has waited too long or the buffer is too big
//! ([`Merge::force`]), trading order for liveness when a producer is gone.

use std::collections::VecDeque;

use wfe_schemas::Topic;

/// A sequence number: the position of the source input a message descends from.
pub type Seq = i64;

/// The seq of what a stage emits when it flushes at the end of its input.
pub const END: Seq = Seq::MAX;

/// A stage's inputs in merge rank: the order the pipeline derives them (`metrics.norm` before
/// the fingerprints, anomalies and forecasts made from it), so that at one seq the stage sees
/// a cause before what it caused.
pub fn ranked(mut inputs: Vec<Topic>) -> Vec<Topic> {
    inputs.sort_by_key(|t| Topic::ALL.iter().position(|x| x == t));
    inputs.dedup();
    inputs
}

/// Merges the messages of `n` inputs (index = rank: ties in seq go to the lower index).
#[derive(Debug)]
pub struct Merge<T> {
    inputs: Vec<Input<T>>,
    held: usize,
}

#[derive(Debug)]
struct Input<T> {
    queue: VecDeque<(Seq, T)>,
    /// Every message of seq <= `done` has arrived.
    done: Seq,
    /// The highest seq queued, so the queue stays in seq order.
    last: Seq,
}

impl<T> Merge<T> {
    pub fn new(inputs: usize) -> Self {
        Self {
            inputs: (0..inputs)
                .map(|_| Input {
                    queue: VecDeque::new(),
                    done: Seq::MIN,
                    last: Seq::MIN,
                })
                .collect(),
            held: 0,
        }
    }

    /// A data message of `input` at `seq`. A producer emits in seq order, so it has finished
    /// everything before `seq`. A message below what the input already passed (a producer
    /// replaying after a crash) is queued at the input's current position: input order is
    /// kept, and the stage drops what it already saw.
    pub fn push(&mut self, input: usize, seq: Seq, item: T) {
        let i = &mut self.inputs[input];
        let seq = seq.max(i.last);
        i.last = seq;
        i.done = i.done.max(seq.saturating_sub(1));
        i.queue.push_back((seq, item));
        self.held += 1;
    }

    /// A progress mark of `input`: everything of seq <= `seq` has been sent.
    pub fn progress(&mut self, input: usize, seq: Seq) {
        let i = &mut self.inputs[input];
        i.done = i.done.max(seq);
    }

    /// The input has ended (end-of-stream, or its producer is gone for good).
    pub fn close(&mut self, input: usize) {
        self.progress(input, END);
    }

    /// Opens an input that had ended again (a second replay after an end-of-stream): it is
    /// at `seq` now.
    pub fn reopen(&mut self, input: usize, seq: Seq) {
        let i = &mut self.inputs[input];
        if i.done == END {
            i.done = seq.saturating_sub(1);
        }
    }

    /// The least message held, if any.
    pub fn peek(&self) -> Option<&T> {
        let (i, _) = self.head()?;
        self.front(i)
    }

    /// The least message held, with its input and seq, to look at or amend before its turn.
    pub fn head_mut(&mut self) -> Option<(usize, Seq, &mut T)> {
        let (i, seq) = self.head()?;
        let (_, item) = self.inputs[i].queue.front_mut()?;
        Some((i, seq, item))
    }

    /// Where `input` stands: every message of seq <= this has arrived.
    pub fn done(&self, input: usize) -> Seq {
        self.inputs[input].done
    }

    /// The next message in `(seq, input)` order, once no earlier one can still arrive.
    pub fn pop(&mut self) -> Option<(usize, Seq, T)> {
        let (i, seq) = self.head()?;
        let ready = self.inputs.iter().enumerate().all(|(j, other)| {
            // A queued message of another input is not earlier (the head is the least); an
            // input with nothing queued must have finished what would come first.
            j == i
                || !other.queue.is_empty()
                || if j < i {
                    other.done >= seq
                } else {
                    other.done >= seq.saturating_sub(1)
                }
        });
        if ready { self.take(i) } else { None }
    }

    /// The least message held, whether or not an earlier one may still arrive.
    pub fn force(&mut self) -> Option<(usize, Seq, T)> {
        let (i, _) = self.head()?;
        self.take(i)
    }

    /// The highest seq through which everything has been released (`Seq::MIN`: nothing yet):
    /// what a stage may say in its own progress marks.
    pub fn through(&self) -> Seq {
        (0..self.inputs.len())
            .map(|i| self.through_input(i))
            .min()
            .unwrap_or(Seq::MIN)
    }

    /// The highest seq through which everything of `input` has been released: what a
    /// snapshot says of it (its held messages are read again after a restore).
    pub fn through_input(&self, input: usize) -> Seq {
        let i = &self.inputs[input];
        match i.queue.front() {
            Some((s, _)) => s.saturating_sub(1).min(i.done),
            None => i.done,
        }
    }

    /// Messages held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The first message held of `input`, if any.
    pub fn front(&self, input: usize) -> Option<&T> {
        self.inputs[input].queue.front().map(|(_, t)| t)
    }

    /// The least message held: (input, seq).
    fn head(&self) -> Option<(usize, Seq)> {
        self.inputs
            .iter()
            .enumerate()
            .filter_map(|(i, inp)| inp.queue.front().map(|(s, _)| (*s, i)))
            .min()
            .map(|(s, i)| (i, s))
    }

    fn take(&mut self, i: usize) -> Option<(usize, Seq, T)> {
        let (seq, item) = self.inputs[i].queue.pop_front()?;
        self.held -= 1;
        Some((i, seq, item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(m: &mut Merge<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| m.pop().map(|(_, _, t)| t)).collect()
    }

    #[test]
    fn one_input_releases_at_once_and_says_how_far_it_got() {
        let mut m = Merge::new(1);
        assert_eq!(m.through(), Seq::MIN);
        m.push(0, 3, "a");
        assert_eq!(drain(&mut m), ["a"]);
        // A message of seq 3 says nothing of the rest of seq 3; the mark does.
        assert_eq!(m.through(), 2);
        m.progress(0, 3);
        assert_eq!(m.through(), 3);
    }

    /// A snapshot says of each input what has been released: a held message of seq 5 after
    /// a mark through 6 leaves the input through 4, to be read again.
    #[test]
    fn an_input_is_through_the_seq_before_its_first_held_message() {
        let mut m = Merge::new(2);
        m.push(1, 5, "forecast@5");
        m.progress(1, 6);
        m.progress(0, 9);
        assert_eq!(m.done(1), 6);
        assert_eq!(m.through_input(1), 4);
        assert_eq!(m.through_input(0), 9);
        assert_eq!(m.through(), 4);
        assert_eq!(drain(&mut m), ["forecast@5"]);
        assert_eq!(m.through_input(1), 6);
    }

    #[test]
    fn the_derived_topic_waits_for_the_samples_it_came_from() {
        // input 0: metrics.norm; input 1: forecasts made from it.
        let mut m = Merge::new(2);
        m.push(1, 5, "forecast@5");
        assert_eq!(m.pop(), None, "samples of seq 5 may still come");
        m.push(0, 5, "norm@5");
        assert_eq!(drain(&mut m), ["norm@5"]);
        assert_eq!(m.pop(), None, "more samples of seq 5 may still come");
        m.progress(0, 5);
        assert_eq!(drain(&mut m), ["forecast@5"]);
        assert_eq!(m.through(), 4, "forecasts of seq 5 may still come");
        m.progress(1, 5);
        assert_eq!(m.through(), 5);
    }

    #[test]
    fn arrival_order_does_not_change_the_release_order() {
        // Each input's messages in the order its producer sent them.
        let sent: [&[(Seq, &str)]; 3] = [
            &[(1, "n1"), (2, "n2")],
            &[(1, "f1"), (3, "f3")],
            &[(2, "p2")],
        ];
        // Interleavings across inputs (which input's next message arrives next).
        for arrivals in [
            [0, 0, 1, 1, 2],
            [1, 1, 2, 0, 0],
            [2, 1, 0, 1, 0],
            [1, 0, 2, 1, 0],
        ] {
            let mut m = Merge::new(3);
            let mut next = [0; 3];
            let mut got = Vec::new();
            for i in arrivals {
                let (s, t) = sent[i][next[i]];
                next[i] += 1;
                m.push(i, s, t);
                got.extend(drain(&mut m));
            }
            for i in 0..3 {
                m.close(i);
            }
            got.extend(drain(&mut m));
            assert_eq!(m.held(), 0);
            assert_eq!(got, ["n1", "f1", "n2", "p2", "f3"], "arrivals {arrivals:?}");
        }
    }

    #[test]
    fn a_replayed_message_keeps_its_input_order_and_force_releases_what_is_stuck() {
        let mut m = Merge::new(2);
        m.push(1, 7, "f7");
        m.push(1, 4, "f4 again"); // the producer replays after a crash
        m.progress(0, 7);
        assert_eq!(drain(&mut m), ["f7", "f4 again"]);
        // Input 1 never says more: a message of input 0 waits, until forced.
        m.push(0, 9, "n9");
        assert_eq!(m.pop(), None);
        assert_eq!(m.force().map(|(_, s, t)| (s, t)), Some((9, "n9")));
        assert_eq!(m.force(), None);
    }

    #[test]
    fn a_closed_input_holds_nothing_back() {
        let mut m = Merge::new(2);
        m.push(0, 1, "n1");
        m.close(0);
        m.push(1, 2, "f2");
        assert_eq!(drain(&mut m), ["n1", "f2"]);
        m.close(1);
        assert_eq!(m.through(), END);
    }
}
