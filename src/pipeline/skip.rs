//! Skip, adopt, retry or give up: one pure function of the ledger row, the input's facts and
//! the stored meta. [`decide`] is asked again as facts arrive: first with what a stat gives
//! (size, mtime), then with the stored `meta.json` when the output-exists check wants it,
//! then with the input's hash after fetching. It reads nothing itself.

use crate::item::InputFacts;
use crate::ledger::{ItemRow, ItemState};
use crate::pipeline::error::ErrorKind;
use crate::pipeline::meta::ItemMeta;

/// What the stored `meta.json` of an item is known to be.
#[derive(Debug, Clone, Copy)]
pub enum Stored<'a> {
    /// Not read (yet).
    Unread,
    /// Read: none, or unreadable.
    Absent,
    /// Read.
    Found(&'a ItemMeta),
}

/// Everything the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// Recompute whatever the ledger says.
    pub force: bool,
    /// This run's config hash.
    pub config_hash: &'a str,
    /// `run.max_attempts`.
    pub max_attempts: u32,
    /// Whether outputs found where outputs live are adopted (`output.check_existing`).
    pub check_existing: bool,
    /// The item's ledger row.
    pub row: Option<&'a ItemRow>,
    /// Whether the item's output folder (or prefix) holds a `meta.json`.
    pub outputs_present: bool,
    /// Size and mtime from a stat; the hash once fetched.
    pub facts: &'a InputFacts,
    /// The stored meta.
    pub stored: Stored<'a>,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Done already for this input and config: record `skipped`. `hash` is the input's
    /// hash from the ledger (the input was not read).
    Skip {
        /// The input hash to record.
        hash: Option<String>,
    },
    /// Complete outputs for this input and config exist (another node, a lost ledger):
    /// record them as done without recomputing.
    Adopt {
        /// The input hash from the stored meta.
        hash: Option<String>,
    },
    /// Read the stored meta, then decide again.
    ReadStored,
    /// Fetch the input (which hashes it), then decide again.
    Fetch,
    /// Out of attempts for this input and config: record `gave_up`.
    GiveUp {
        /// The last failure's kind and message, for the report.
        last: String,
    },
    /// Process it. `alone`: nothing else may be in flight meanwhile (it was in flight when
    /// a run stopped, so it is a suspect: see `Ledger::recover_running`).
    Run {
        /// Run it with no other item in flight.
        alone: bool,
    },
}

/// The one decision. The rules, in order:
/// 1. `force`: fetch, then run.
/// 2. Done here (ledger row done with this config hash, outputs present) and the same size
///    and mtime (known): skip without reading the input, as make and rsync assume.
/// 3. With `check_existing`, not done here: read the stored meta; stored meta with this
///    config hash and the same size and mtime (known): adopt.
/// 4. No hash yet: fetch.
/// 5. Done here with the same input hash: skip.
/// 6. Failed `max_attempts` times for this input and config: give up.
/// 7. Otherwise run, alone when the last attempt was interrupted for this input and config.
pub fn decide(s: &Situation<'_>) -> Decision {
    let facts = s.facts;
    let same_stat = |size: Option<i64>, mtime: Option<i64>| {
        facts.mtime_ns.is_some() && size == facts.size && mtime == facts.mtime_ns
    };
    let done_here = s.row.is_some_and(|r| {
        r.state == ItemState::Done && r.config_hash == s.config_hash && s.outputs_present
    });
    if s.force {
        return match facts.hash {
            None => Decision::Fetch,
            Some(_) => Decision::Run { alone: false },
        };
    }
    if let Some(r) = s.row {
        if done_here && same_stat(r.input_size, r.input_mtime_ns) {
            return Decision::Skip {
                hash: r.input_hash.clone(),
            };
        }
    }
    if s.check_existing && !done_here && facts.hash.is_none() {
        match s.stored {
            Stored::Unread => return Decision::ReadStored,
            Stored::Found(m)
                if m.config_hash == s.config_hash && same_stat(m.input_size, m.input_mtime_ns) =>
            {
                return Decision::Adopt {
                    hash: m.input_hash.clone(),
                };
            }
            Stored::Found(_) | Stored::Absent => {}
        }
    }
    if facts.hash.is_none() {
        return Decision::Fetch;
    }
    let Some(r) = s.row else {
        return Decision::Run { alone: false };
    };
    let same_input = r.input_hash == facts.hash && r.config_hash == s.config_hash;
    if same_input && done_here {
        return Decision::Skip {
            hash: facts.hash.clone(),
        };
    }
    let failed_here = same_input && r.state == ItemState::Failed;
    if failed_here && r.attempts >= i64::from(s.max_attempts) {
        return Decision::GiveUp {
            last: format!(
                "[{}] {}",
                r.error_kind.as_deref().unwrap_or("?"),
                r.error_message.as_deref().unwrap_or("")
            ),
        };
    }
    let interrupted = r.error_kind.as_deref() == Some(ErrorKind::Interrupted.as_str());
    Decision::Run {
        alone: failed_here && interrupted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "cfg1";

    fn row(state: ItemState, hash: &str) -> ItemRow {
        ItemRow {
            element: "e".into(),
            source: "/in/e.wav".into(),
            input_size: Some(100),
            input_mtime_ns: Some(7),
            input_hash: Some(hash.into()),
            config_hash: CFG.into(),
            state,
            error_kind: None,
            error_message: None,
            attempts: 0,
        }
    }

    fn stat() -> InputFacts {
        InputFacts {
            size: Some(100),
            mtime_ns: Some(7),
            hash: None,
        }
    }

    fn hashed(h: &str) -> InputFacts {
        InputFacts {
            hash: Some(h.into()),
            ..stat()
        }
    }

    fn situation<'a>(row: Option<&'a ItemRow>, facts: &'a InputFacts) -> Situation<'a> {
        Situation {
            force: false,
            config_hash: CFG,
            max_attempts: 3,
            check_existing: false,
            row,
            outputs_present: true,
            facts,
            stored: Stored::Unread,
        }
    }

    #[test]
    fn rule_1_force_fetches_then_runs_even_when_done() {
        let r = row(ItemState::Done, "h");
        let (f0, f1) = (stat(), hashed("h"));
        let s = Situation {
            force: true,
            ..situation(Some(&r), &f0)
        };
        assert_eq!(decide(&s), Decision::Fetch);
        let s = Situation {
            force: true,
            ..situation(Some(&r), &f1)
        };
        assert_eq!(decide(&s), Decision::Run { alone: false });
    }

    #[test]
    fn rule_2_done_with_same_size_and_mtime_skips_without_reading() {
        let r = row(ItemState::Done, "h");
        let f = stat();
        assert_eq!(
            decide(&situation(Some(&r), &f)),
            Decision::Skip {
                hash: Some("h".into())
            }
        );
        // Another mtime, an unknown mtime, another config, missing outputs: no fast path.
        let moved = InputFacts {
            mtime_ns: Some(8),
            ..stat()
        };
        assert_eq!(decide(&situation(Some(&r), &moved)), Decision::Fetch);
        let unknown = InputFacts {
            mtime_ns: None,
            ..stat()
        };
        let mut r2 = r.clone();
        r2.input_mtime_ns = None;
        assert_eq!(decide(&situation(Some(&r2), &unknown)), Decision::Fetch);
        let mut other = r.clone();
        other.config_hash = "cfg0".into();
        assert_eq!(decide(&situation(Some(&other), &f)), Decision::Fetch);
        let s = Situation {
            outputs_present: false,
            ..situation(Some(&r), &f)
        };
        assert_eq!(decide(&s), Decision::Fetch);
    }

    #[test]
    fn rule_3_stored_outputs_for_this_input_and_config_are_adopted() {
        let f = stat();
        let s = Situation {
            check_existing: true,
            ..situation(None, &f)
        };
        assert_eq!(decide(&s), Decision::ReadStored);
        let meta = ItemMeta {
            config_hash: CFG.into(),
            input_size: Some(100),
            input_mtime_ns: Some(7),
            input_hash: Some("h".into()),
            ..ItemMeta::default()
        };
        let found = Situation {
            stored: Stored::Found(&meta),
            ..s
        };
        assert_eq!(
            decide(&found),
            Decision::Adopt {
                hash: Some("h".into())
            }
        );
        let other = ItemMeta {
            config_hash: "cfg0".into(),
            ..meta.clone()
        };
        let s2 = Situation {
            stored: Stored::Found(&other),
            ..s
        };
        assert_eq!(decide(&s2), Decision::Fetch);
        let absent = Situation {
            stored: Stored::Absent,
            ..s
        };
        assert_eq!(decide(&absent), Decision::Fetch);
        // Without check_existing the stored meta is never asked for.
        assert_eq!(decide(&situation(None, &f)), Decision::Fetch);
    }

    #[test]
    fn rule_4_without_a_hash_the_input_is_fetched() {
        let f = stat();
        assert_eq!(decide(&situation(None, &f)), Decision::Fetch);
        let r = row(ItemState::Failed, "h");
        assert_eq!(decide(&situation(Some(&r), &f)), Decision::Fetch);
    }

    #[test]
    fn rule_5_done_with_the_same_hash_skips_after_reading() {
        let r = row(ItemState::Done, "h");
        let touched = InputFacts {
            mtime_ns: Some(9),
            hash: Some("h".into()),
            ..stat()
        };
        assert_eq!(
            decide(&situation(Some(&r), &touched)),
            Decision::Skip {
                hash: Some("h".into())
            }
        );
        let changed = InputFacts {
            hash: Some("h2".into()),
            ..touched
        };
        assert_eq!(
            decide(&situation(Some(&r), &changed)),
            Decision::Run { alone: false }
        );
    }

    #[test]
    fn rule_6_out_of_attempts_for_this_input_and_config_gives_up() {
        let mut r = row(ItemState::Failed, "h");
        r.attempts = 3;
        r.error_kind = Some("corrupt".into());
        r.error_message = Some("bad packet".into());
        let f = hashed("h");
        assert_eq!(
            decide(&situation(Some(&r), &f)),
            Decision::GiveUp {
                last: "[corrupt] bad packet".into()
            }
        );
        // A changed input or config starts over.
        let f2 = hashed("h2");
        assert_eq!(
            decide(&situation(Some(&r), &f2)),
            Decision::Run { alone: false }
        );
        let mut r2 = r.clone();
        r2.config_hash = "cfg0".into();
        assert_eq!(
            decide(&situation(Some(&r2), &f)),
            Decision::Run { alone: false }
        );
        // Under the limit: retried.
        r.attempts = 2;
        assert_eq!(
            decide(&situation(Some(&r), &f)),
            Decision::Run { alone: false }
        );
    }

    #[test]
    fn rule_7_interrupted_items_run_alone() {
        let mut r = row(ItemState::Failed, "h");
        r.attempts = 1;
        r.error_kind = Some("interrupted".into());
        let f = hashed("h");
        assert_eq!(
            decide(&situation(Some(&r), &f)),
            Decision::Run { alone: true }
        );
        // Interrupted with another input: a new item as far as crashes go.
        let f2 = hashed("h2");
        assert_eq!(
            decide(&situation(Some(&r), &f2)),
            Decision::Run { alone: false }
        );
        assert_eq!(decide(&situation(None, &f)), Decision::Run { alone: false });
    }
}
