//! Publishing Events so that distinct notes stay distinct Events. kube-runtime's `Recorder`
//! folds every Event with the same regarding object, type, reason and action into one series,
//! whatever its note: "removed orphan web-0" and "removed orphan db-0" would become one Event
//! showing only the first note. [`NoteRecorder`] keeps one `Recorder` per distinct
//! (object, type, reason, note), so only true repetitions become a series.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Longest note published (the API limits an Event's note to 1 kB).
pub const MAX_NOTE_BYTES: usize = 1000;

/// Recorders kept before the cache is cleared (each holds kube-runtime's own series cache).
const MAX_RECORDERS: usize = 2048;

/// A publisher of Events that keeps distinct notes apart (see the module documentation).
pub struct NoteRecorder {
    client: kube::Client,
    reporter: Reporter,
    recorders: tokio::sync::Mutex<HashMap<String, Recorder>>,
}

impl std::fmt::Debug for NoteRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteRecorder").field("reporter", &self.reporter).finish()
    }
}

/// `note` cut to at most [`MAX_NOTE_BYTES`] at a character boundary.
pub fn truncate_note(mut note: String) -> String {
    if note.len() > MAX_NOTE_BYTES {
        let mut cut = MAX_NOTE_BYTES;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    note
}

impl NoteRecorder {
    /// A publisher writing through `client` as `reporter`.
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self { client, reporter, recorders: Default::default() }
    }

    /// Publishes `event` about `reference` (its note truncated to [`MAX_NOTE_BYTES`]).
    pub async fn publish(&self, mut event: Event, reference: &ObjectReference) -> Result<(), kube::Error> {
        let note = truncate_note(event.note.take().unwrap_or_default());
        let warning = matches!(event.type_, EventType::Warning);
        let key = format!(
            "{}|{}|{warning}|{}|{}|{note}",
            reference.uid.as_deref().unwrap_or_default(),
            reference.name.as_deref().unwrap_or_default(),
            event.reason,
            event.action
        );
        event.note = Some(note);
        let recorder = {
            let mut recorders = self.recorders.lock().await;
            if recorders.len() > MAX_RECORDERS && !recorders.contains_key(&key) {
                recorders.clear();
            }
            recorders.entry(key).or_insert_with(|| Recorder::new(self.client.clone(), self.reporter.clone())).clone()
        };
        recorder.publish(&event, reference).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_at_a_character_boundary() {
        assert_eq!(truncate_note("short".into()), "short");
        let long = "é".repeat(600); // 1200 bytes
        let cut = truncate_note(long);
        assert!(cut.len() <= MAX_NOTE_BYTES && cut.len() >= MAX_NOTE_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
