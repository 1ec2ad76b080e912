//! The lifecycle of one Host's Docker connection as an explicit state machine: the states a
//! connection can be in, the inputs that move it, and [`transition`], which accepts exactly the
//! moves the connection task may make and refuses every other one. The task in [`super::link`]
//! drives it; Host status is derived from the state it reaches.
//!
//! ```text
//! Disconnected ─Dial→ Connecting ─Established→ Connected ─Dropped→ Lost ─Dial→ Connecting …
//!                         └──DialFailed→ Failed ─Dial→ Connecting …
//! any state ─Stop→ Stopped (terminal: the Host was deleted, its endpoint changed, or berth stops)
//! ```

/// Where a Host's connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Nothing tried yet.
    Disconnected,
    /// Dialing the daemon (connect, negotiate the API version, read its facts).
    Connecting {
        /// Attempts since the last time the connection was up, this one included.
        attempt: u32,
        /// Why the previous attempt failed or the connection was lost, if it did.
        last_error: Option<String>,
    },
    /// Connected: events flow and pings answer.
    Connected,
    /// The last dial attempt failed; the next one comes after a backoff delay.
    Failed {
        /// Attempts made since the connection was last up.
        attempt: u32,
        /// Why it failed.
        error: String,
    },
    /// The connection was up and dropped (event stream ended, ping failed); reconnecting soon.
    Lost {
        /// Why it dropped.
        error: String,
    },
    /// The connection was given up for good (Host deleted or reconfigured, or berth stopping).
    Stopped,
}

/// What happened to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionInput {
    /// The task starts a connection attempt.
    Dial,
    /// The attempt succeeded.
    Established,
    /// The attempt failed, with the reason.
    DialFailed(String),
    /// An established connection stopped working, with the reason.
    Dropped(String),
    /// The connection is no longer wanted.
    Stop,
}

/// Why a transition was refused: the connection task asked for a move the lifecycle forbids,
/// which is a bug in the task, never a condition of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The input makes no sense in the current state.
    #[error(
        "connection state {from} does not accept {input}; this is a bug in berth's connection task, please report it"
    )]
    RefusedTransition {
        /// State name.
        from: &'static str,
        /// Input name.
        input: &'static str,
    },
}

impl ConnectionState {
    /// The state's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Disconnected => "Disconnected",
            Self::Connecting { .. } => "Connecting",
            Self::Connected => "Connected",
            Self::Failed { .. } => "Failed",
            Self::Lost { .. } => "Lost",
            Self::Stopped => "Stopped",
        }
    }

    /// Why the daemon does not answer, when the state says it does not (a failed or lost
    /// connection, or a reconnect attempt after one).
    pub fn error(&self) -> Option<&str> {
        match self {
            Self::Failed { error, .. } | Self::Lost { error } => Some(error),
            Self::Connecting { last_error, .. } => last_error.as_deref(),
            Self::Disconnected | Self::Connected | Self::Stopped => None,
        }
    }
}

impl ConnectionInput {
    /// The input's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Dial => "Dial",
            Self::Established => "Established",
            Self::DialFailed(_) => "DialFailed",
            Self::Dropped(_) => "Dropped",
            Self::Stop => "Stop",
        }
    }
}

/// The state after `input` in `state`, or why that move is not allowed.
pub fn transition(state: &ConnectionState, input: ConnectionInput) -> Result<ConnectionState, ConnectionError> {
    use ConnectionInput as I;
    use ConnectionState as S;
    let refused =
        |input: &ConnectionInput| ConnectionError::RefusedTransition { from: state.name(), input: input.name() };
    match (state, input) {
        (S::Stopped, input) => Err(refused(&input)),
        (_, I::Stop) => Ok(S::Stopped),
        (S::Disconnected, I::Dial) => Ok(S::Connecting { attempt: 1, last_error: None }),
        (S::Failed { attempt, error }, I::Dial) => {
            Ok(S::Connecting { attempt: attempt.saturating_add(1), last_error: Some(error.clone()) })
        }
        (S::Lost { error }, I::Dial) => Ok(S::Connecting { attempt: 1, last_error: Some(error.clone()) }),
        (S::Connecting { .. }, I::Established) => Ok(S::Connected),
        (S::Connecting { attempt, .. }, I::DialFailed(error)) => Ok(S::Failed { attempt: *attempt, error }),
        (S::Connected, I::Dropped(error)) => Ok(S::Lost { error }),
        (_, input) => Err(refused(&input)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectionInput as I;
    use ConnectionState as S;

    fn states() -> Vec<S> {
        vec![
            S::Disconnected,
            S::Connecting { attempt: 2, last_error: Some("refused".into()) },
            S::Connected,
            S::Failed { attempt: 2, error: "refused".into() },
            S::Lost { error: "stream ended".into() },
            S::Stopped,
        ]
    }

    fn inputs() -> Vec<I> {
        vec![I::Dial, I::Established, I::DialFailed("timeout".into()), I::Dropped("ping failed".into()), I::Stop]
    }

    /// The allowed moves; every pair of (state, input) not listed here must be refused.
    fn allowed(state: &S, input: &I) -> Option<S> {
        let table: Vec<(S, I, S)> = vec![
            (S::Disconnected, I::Dial, S::Connecting { attempt: 1, last_error: None }),
            (S::Disconnected, I::Stop, S::Stopped),
            (S::Connecting { attempt: 2, last_error: Some("refused".into()) }, I::Established, S::Connected),
            (
                S::Connecting { attempt: 2, last_error: Some("refused".into()) },
                I::DialFailed("timeout".into()),
                S::Failed { attempt: 2, error: "timeout".into() },
            ),
            (S::Connecting { attempt: 2, last_error: Some("refused".into()) }, I::Stop, S::Stopped),
            (S::Connected, I::Dropped("ping failed".into()), S::Lost { error: "ping failed".into() }),
            (S::Connected, I::Stop, S::Stopped),
            (
                S::Failed { attempt: 2, error: "refused".into() },
                I::Dial,
                S::Connecting { attempt: 3, last_error: Some("refused".into()) },
            ),
            (S::Failed { attempt: 2, error: "refused".into() }, I::Stop, S::Stopped),
            (
                S::Lost { error: "stream ended".into() },
                I::Dial,
                S::Connecting { attempt: 1, last_error: Some("stream ended".into()) },
            ),
            (S::Lost { error: "stream ended".into() }, I::Stop, S::Stopped),
        ];
        table.into_iter().find(|(s, i, _)| s == state && i == input).map(|(_, _, next)| next)
    }

    #[test]
    fn every_allowed_transition_happens_and_every_other_is_refused() {
        let mut allowed_count = 0;
        for state in states() {
            for input in inputs() {
                let got = transition(&state, input.clone());
                match allowed(&state, &input) {
                    Some(next) => {
                        allowed_count += 1;
                        assert_eq!(got, Ok(next), "{state:?} + {input:?}");
                    }
                    None => assert_eq!(
                        got,
                        Err(ConnectionError::RefusedTransition { from: state.name(), input: input.name() }),
                        "{state:?} + {input:?} must be refused"
                    ),
                }
            }
        }
        assert_eq!(allowed_count, 11, "the table above lists 11 allowed moves");
    }

    #[test]
    fn a_typical_life_reconnects_after_a_loss_and_counts_failed_attempts() {
        let mut s = S::Disconnected;
        for input in [I::Dial, I::DialFailed("refused".into()), I::Dial, I::DialFailed("refused again".into()), I::Dial]
        {
            s = transition(&s, input).unwrap();
        }
        assert_eq!(s, S::Connecting { attempt: 3, last_error: Some("refused again".into()) });
        assert_eq!(s.error(), Some("refused again"));
        s = transition(&s, I::Established).unwrap();
        assert_eq!(s.error(), None);
        s = transition(&s, I::Dropped("event stream ended".into())).unwrap();
        assert_eq!(s.error(), Some("event stream ended"));
        s = transition(&s, I::Dial).unwrap();
        assert_eq!(s, S::Connecting { attempt: 1, last_error: Some("event stream ended".into()) });
        s = transition(&s, I::Stop).unwrap();
        assert!(transition(&s, I::Dial).is_err());
    }

    #[test]
    fn refusal_message_names_the_state_and_the_input() {
        let msg = transition(&S::Connected, I::Dial).unwrap_err().to_string();
        assert!(msg.contains("Connected") && msg.contains("Dial"), "{msg}");
    }
}
