//! Where a file stands with its pod's labels from the Kubernetes API (`kubernetes_api`), and
//! the fields its events carry.
//!
//! ```text
//!            open, API answers at once ──────────────────────▶ Known ◀─┐ looked up again
//!   Late ──┤ open, being asked ──▶ Waiting ── answered ───────▶ Known   │ when an answer
//!            open, API down ───────▶ Late     wait over/full ─▶ Known   │ changed, and every
//!                                             or closing         or Late┘ cache_ttl (a changed
//!   Late ── each batch asks again; an answer ─▶ Known                     answer replaces the
//!                                                                         API fields)
//! ```
//!
//! "An answer changed" is `logferry-kubernetes`'s generation moving (its watch saw a pod
//! relabelled, or a `GET` brought a new answer): one atomic load per batch, so a relabel
//! reaches the next batch rather than waiting for `cache_ttl`.
//!
//! While a file is [`PodLabels::Waiting`], its events are held in memory, not past their
//! position: [`Labels::held_from`] keeps the saved position before them, so a crash re-reads
//! them. The reader never waits on the network: a lookup is a map lookup in
//! `logferry-kubernetes`'s cache, which asks the API in the background.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logferry_kubernetes::{Lookup, PodMeta, PodRef};
use logferry_tail::multiline::Preset;

use super::decode::Pending;
use crate::event::{names, CommonFields, FieldName};

/// Events one file may hold while its pod's labels are looked up, and message bytes all files
/// together may hold: past either, the file stops waiting and sends without labels. A new pod
/// rarely logs this much within `wait`; the bound keeps memory flat when hundreds start at once.
pub(super) const POD_HOLD_MAX: usize = 10_000;
pub(super) const POD_HOLD_MAX_BYTES: usize = 16 << 20;

/// Where a file stands with its pod's labels.
#[derive(Debug)]
pub(super) enum PodLabels {
    /// Nothing to look up (no API, not a pod's file).
    Unwanted,
    /// First lookup pending: events are held until `until`.
    Waiting {
        pod: PodRef,
        until: Instant,
        held: Vec<Pending>,
        held_bytes: usize,
        /// The file's position when holding began; nothing past it may be saved.
        from: u64,
    },
    /// The wait ran out, or the API is down: events go without labels, but each batch looks
    /// again (a map lookup) until the API has answered.
    Late(PodRef),
    /// The API answered (`meta` is `None` for a pod it does not know); looked up again every
    /// `cache_ttl`, so a relabelled pod's files follow.
    Known {
        pod: PodRef,
        meta: Option<Arc<PodMeta>>,
        checked: Instant,
    },
}

/// What a pod lookup came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PodAnswer {
    /// The API answered; its labels (or their absence) are applied.
    Applied,
    /// Being asked while the API answers.
    Pending,
    /// No answer to be had now.
    Unavailable,
}

/// What a pod's `logferry.io/` annotations ask of one of its containers' files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Directives {
    /// `logferry.io/exclude: "true"` (the whole pod) or `logferry.io/exclude-<container>:
    /// "true"`: the file's lines are read and acknowledged, never shipped.
    pub excluded: bool,
    /// `logferry.io/multiline: java|python|go`: the preset replaces the source's `multiline`.
    pub multiline: Option<Preset>,
}

impl Directives {
    /// The directives of `container`'s file in a pod with these annotations. Values other
    /// than `"true"` (any case) do not exclude; an unknown preset name is ignored.
    pub fn of(annotations: &BTreeMap<String, String>, container: &str) -> Self {
        let yes = |key: &str| {
            annotations
                .get(key)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        };
        let excluded =
            yes("logferry.io/exclude") || yes(&format!("logferry.io/exclude-{container}"));
        let multiline = annotations
            .get("logferry.io/multiline")
            .and_then(|name| Preset::from_name(name.trim()));
        Directives {
            excluded,
            multiline,
        }
    }
}

/// The field an event has of its own after its file's (its container stream), if any.
type OwnField = Option<(FieldName, Bytes)>;

/// A file's event fields and its pod's labels.
#[derive(Debug)]
pub(super) struct Labels {
    /// Fields every event of this file carries (path, pod metadata).
    fields: Vec<(FieldName, Bytes)>,
    /// `fields` followed by an event's own field (its container stream, or none), as its
    /// events share them ([`Labels::common`]); made again when `fields` change.
    commons: Vec<(OwnField, Arc<CommonFields>)>,
    /// How many of `fields` come from the path (the rest, from the API, are replaced when the
    /// pod's labels change).
    path_fields: usize,
    pub state: PodLabels,
    /// The container the file belongs to (empty for a file that is not a pod's).
    container: String,
    /// What the pod's annotations ask of this file, as of the last answer.
    pub directives: Directives,
    /// The lookups' generation ([`logferry_kubernetes::PodMetadata::generation`]) when the
    /// pod was last looked up.
    pub generation: u64,
}

impl Labels {
    /// A file's labels from its path's `fields`; with an API to ask, a pod's file starts
    /// [`PodLabels::Late`] (then learns its labels at once, or waits for them).
    pub fn new(fields: Vec<(FieldName, Bytes)>, pod: Option<(PodRef, String)>, api: bool) -> Self {
        let (state, container) = match pod {
            Some((pod, container)) if api => (PodLabels::Late(pod), container),
            _ => (PodLabels::Unwanted, String::new()),
        };
        Labels {
            path_fields: fields.len(),
            fields,
            commons: Vec::new(),
            state,
            container,
            directives: Directives::default(),
            generation: 0,
        }
    }

    /// Looks the pod of a [`PodLabels::Late`] or [`PodLabels::Known`] file up again with
    /// `lookup` (`None`: no API) and applies what it says. Without an answer a late file stays
    /// late and a known one keeps what it has. `want_node`: the pod's node becomes a field
    /// (false when `NODE_NAME` put it among the path's fields).
    pub fn learn(
        &mut self,
        lookup: impl FnOnce(&PodRef) -> Option<Lookup>,
        want_node: bool,
        now: Instant,
    ) -> PodAnswer {
        let (pod, known) = match std::mem::replace(&mut self.state, PodLabels::Unwanted) {
            PodLabels::Late(pod) => (pod, None),
            PodLabels::Known { pod, meta, .. } => (pod, Some(meta)),
            other => {
                self.state = other;
                return PodAnswer::Unavailable;
            }
        };
        let meta = match lookup(&pod) {
            Some(Lookup::Found(m)) => Some(m),
            Some(Lookup::NotFound) | None => None,
            Some(no @ (Lookup::Unavailable | Lookup::Pending)) => {
                self.state = match known {
                    Some(meta) => PodLabels::Known {
                        pod,
                        meta,
                        checked: now,
                    },
                    None => PodLabels::Late(pod),
                };
                return if no == Lookup::Pending {
                    PodAnswer::Pending
                } else {
                    PodAnswer::Unavailable
                };
            }
        };
        if known.as_ref() != Some(&meta) {
            self.fields.truncate(self.path_fields);
            self.commons.clear();
            if let Some(m) = &meta {
                add_pod_fields(&mut self.fields, m, want_node);
            }
            self.directives = meta
                .as_ref()
                .map(|m| Directives::of(&m.annotations, &self.container))
                .unwrap_or_default();
        }
        self.state = PodLabels::Known {
            pod,
            meta,
            checked: now,
        };
        PodAnswer::Applied
    }

    /// The fields of an event of this file whose own field is `own`: the file's, then `own`,
    /// held once for all such events.
    pub fn common(&mut self, own: OwnField) -> Arc<CommonFields> {
        if let Some((_, common)) = self.commons.iter().find(|(o, _)| *o == own) {
            return common.clone();
        }
        let mut fields = self.fields.clone();
        fields.extend(own.clone());
        let common = Arc::new(CommonFields::new(fields));
        self.commons.push((own, common.clone()));
        common
    }

    /// A [`PodLabels::Late`] file starts holding its events, from the file's position `from`,
    /// until `until`; `true` if it does.
    pub fn start_waiting(&mut self, until: Instant, from: u64) -> bool {
        match std::mem::replace(&mut self.state, PodLabels::Unwanted) {
            PodLabels::Late(pod) => {
                self.state = PodLabels::Waiting {
                    pod,
                    until,
                    held: Vec::new(),
                    held_bytes: 0,
                    from,
                };
                true
            }
            other => {
                self.state = other;
                false
            }
        }
    }

    /// Holds `pending` while the file waits and neither it nor all files together
    /// (`all_held_bytes`) hold too much; the message bytes taken, or `None` if they must go now.
    pub fn hold(&mut self, pending: &mut Vec<Pending>, all_held_bytes: usize) -> Option<usize> {
        match &mut self.state {
            PodLabels::Waiting {
                held, held_bytes, ..
            } if held.len() < POD_HOLD_MAX && all_held_bytes < POD_HOLD_MAX_BYTES => {
                let bytes = pending.iter().map(|p| p.message.len()).sum::<usize>();
                *held_bytes += bytes;
                held.append(pending);
                Some(bytes)
            }
            _ => None,
        }
    }

    /// Ends a [`PodLabels::Waiting`] file's wait (it goes [`PodLabels::Late`], to learn its
    /// labels next): the events it held and their message bytes.
    pub fn end_wait(&mut self) -> Option<(Vec<Pending>, usize)> {
        match std::mem::replace(&mut self.state, PodLabels::Unwanted) {
            PodLabels::Waiting {
                pod,
                held,
                held_bytes,
                ..
            } => {
                self.state = PodLabels::Late(pod);
                Some((held, held_bytes))
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Whether a waiting file may stop waiting: its time is up, or `lookup` (`None`: no API)
    /// has more than "being asked" to say.
    pub fn wait_over(
        &self,
        lookup: impl FnOnce(&PodRef) -> Option<Lookup>,
        now: Instant,
    ) -> Option<bool> {
        match &self.state {
            PodLabels::Waiting { pod, until, .. } => {
                Some(*until <= now || lookup(pod).is_none_or(|l| l != Lookup::Pending))
            }
            _ => None,
        }
    }

    /// Whether the pod should be looked up before the next batch: a late file asks every
    /// time, a known one when the lookups' `generation` moved since, or every `refresh` (when
    /// refreshing is on).
    pub fn lookup_due(&self, refresh: Option<Duration>, generation: u64) -> bool {
        match &self.state {
            PodLabels::Late(_) => true,
            PodLabels::Known { checked, .. } => {
                generation != self.generation
                    || refresh.is_some_and(|every| checked.elapsed() >= every)
            }
            PodLabels::Unwanted | PodLabels::Waiting { .. } => false,
        }
    }

    pub fn is_waiting(&self) -> bool {
        matches!(self.state, PodLabels::Waiting { .. })
    }

    /// Where holding began, while the file holds events: no position past it may be saved.
    pub fn held_from(&self) -> Option<u64> {
        match &self.state {
            PodLabels::Waiting { from, .. } => Some(*from),
            _ => None,
        }
    }
}

/// Pod labels as `label.NAME` fields, and the node from the pod's spec when `NODE_NAME` did
/// not give it.
fn add_pod_fields(out: &mut Vec<(FieldName, Bytes)>, meta: &PodMeta, want_node: bool) {
    for (k, v) in &meta.labels {
        out.push((
            FieldName::Owned(format!("{}{k}", names::LABEL_PREFIX).into()),
            Bytes::from(v.clone()),
        ));
    }
    // `want_node` is false exactly when NODE_NAME put a node among the path's fields.
    if let Some(node) = meta.node_name.as_ref().filter(|_| want_node) {
        out.push((FieldName::Static(names::NODE), Bytes::from(node.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
        }
    }

    fn meta(app: &str) -> Arc<PodMeta> {
        Arc::new(PodMeta {
            labels: [("app".to_string(), app.to_string())].into(),
            node_name: Some("node-1".into()),
            annotations: BTreeMap::new(),
        })
    }

    fn annotated(pairs: &[(&str, &str)]) -> Arc<PodMeta> {
        let mut m = (*meta("a")).clone();
        m.annotations = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Arc::new(m)
    }

    fn labels() -> Labels {
        let path = vec![(FieldName::Static(names::POD), Bytes::from_static(b"web"))];
        Labels::new(path, Some((pod(), "app".into())), true)
    }

    fn directives(pairs: &[(&str, &str)], container: &str) -> Directives {
        Directives::of(&annotated(pairs).annotations, container)
    }

    #[test]
    fn exclude_annotations_cover_the_pod_or_one_container() {
        let none = directives(&[], "app");
        assert_eq!(none, Directives::default());
        assert!(directives(&[("logferry.io/exclude", "true")], "app").excluded);
        assert!(directives(&[("logferry.io/exclude", " TRUE ")], "app").excluded);
        assert!(!directives(&[("logferry.io/exclude", "false")], "app").excluded);
        assert!(!directives(&[("logferry.io/exclude", "yes")], "app").excluded);
        let sidecar = [("logferry.io/exclude-sidecar", "true")];
        assert!(directives(&sidecar, "sidecar").excluded);
        assert!(!directives(&sidecar, "app").excluded, "only that container");
        assert!(!directives(&sidecar, "side").excluded, "the whole name");
    }

    #[test]
    fn multiline_annotation_names_a_preset() {
        let java = directives(&[("logferry.io/multiline", "java")], "app");
        assert_eq!(java.multiline, Some(Preset::Java));
        assert!(!java.excluded);
        let go = directives(&[("logferry.io/multiline", "go")], "app");
        assert_eq!(go.multiline, Some(Preset::Go));
        let rust = directives(&[("logferry.io/multiline", "rust")], "app");
        assert_eq!(rust.multiline, None, "unknown presets are ignored");
    }

    #[test]
    fn learned_annotations_apply_and_follow_a_change() {
        let mut l = labels();
        let now = Instant::now();
        l.learn(
            answer(Lookup::Found(annotated(&[(
                "logferry.io/exclude-app",
                "true",
            )]))),
            true,
            now,
        );
        assert!(l.directives.excluded);
        l.learn(answer(Lookup::Found(meta("a"))), true, now);
        assert!(!l.directives.excluded, "the annotation was removed");
        l.learn(
            answer(Lookup::Found(annotated(&[("logferry.io/exclude", "true")]))),
            true,
            now,
        );
        l.learn(answer(Lookup::NotFound), true, now);
        assert!(!l.directives.excluded, "a pod the API does not know");
    }

    /// The fields as `name=value` strings.
    fn shown(l: &Labels) -> Vec<String> {
        l.fields
            .iter()
            .map(|(k, v)| format!("{}={}", k.as_str(), String::from_utf8_lossy(v)))
            .collect()
    }

    fn pending(msg: &'static str) -> Pending {
        Pending {
            timestamp_ms: 1,
            message: Bytes::from_static(msg.as_bytes()),
            extra: None,
            truncated_bytes: 0,
            origin: 0,
        }
    }

    fn answer(l: Lookup) -> impl FnOnce(&PodRef) -> Option<Lookup> {
        move |p| {
            assert_eq!(p, &pod(), "asks for the file's pod");
            Some(l)
        }
    }

    #[test]
    fn a_pod_file_starts_late_only_with_an_api_to_ask() {
        assert!(matches!(labels().state, PodLabels::Late(_)));
        let no_api = Labels::new(Vec::new(), Some((pod(), "app".into())), false);
        assert!(matches!(no_api.state, PodLabels::Unwanted));
        let not_a_pod = Labels::new(Vec::new(), None, true);
        assert!(matches!(not_a_pod.state, PodLabels::Unwanted));
    }

    #[test]
    fn late_learns_found_labels_and_the_node() {
        let mut l = labels();
        let now = Instant::now();
        assert_eq!(
            l.learn(answer(Lookup::Found(meta("a"))), true, now),
            PodAnswer::Applied
        );
        assert!(matches!(l.state, PodLabels::Known { meta: Some(_), .. }));
        assert_eq!(shown(&l), ["pod=web", "label.app=a", "node=node-1"]);
        let mut without_node = labels();
        without_node.learn(answer(Lookup::Found(meta("a"))), false, now);
        assert_eq!(shown(&without_node), ["pod=web", "label.app=a"]);
    }

    #[test]
    fn late_learns_that_the_api_does_not_know_the_pod() {
        let mut l = labels();
        assert_eq!(
            l.learn(answer(Lookup::NotFound), true, Instant::now()),
            PodAnswer::Applied
        );
        assert!(matches!(l.state, PodLabels::Known { meta: None, .. }));
        assert_eq!(shown(&l), ["pod=web"]);
    }

    #[test]
    fn late_stays_late_without_an_answer() {
        let mut l = labels();
        let now = Instant::now();
        assert_eq!(
            l.learn(answer(Lookup::Pending), true, now),
            PodAnswer::Pending
        );
        assert!(matches!(l.state, PodLabels::Late(_)));
        assert_eq!(
            l.learn(answer(Lookup::Unavailable), true, now),
            PodAnswer::Unavailable
        );
        assert!(matches!(l.state, PodLabels::Late(_)));
        assert_eq!(shown(&l), ["pod=web"]);
    }

    #[test]
    fn known_follows_a_relabel_and_keeps_its_labels_without_an_answer() {
        let mut l = labels();
        let now = Instant::now();
        l.learn(answer(Lookup::Found(meta("a"))), true, now);
        l.learn(answer(Lookup::Found(meta("b"))), true, now);
        assert_eq!(shown(&l), ["pod=web", "label.app=b", "node=node-1"]);
        let later = now + Duration::from_secs(1);
        assert_eq!(
            l.learn(answer(Lookup::Unavailable), true, later),
            PodAnswer::Unavailable
        );
        assert!(matches!(l.state, PodLabels::Known { checked, .. } if checked == later));
        assert_eq!(shown(&l), ["pod=web", "label.app=b", "node=node-1"]);
        l.learn(answer(Lookup::NotFound), true, later);
        assert_eq!(
            shown(&l),
            ["pod=web"],
            "a pod gone from the API loses its labels"
        );
    }

    #[test]
    fn events_share_the_fields_of_the_last_answer_with_their_own_after_them() {
        let mut l = labels();
        let now = Instant::now();
        let stdout = || {
            Some((
                FieldName::Static(names::STREAM),
                Bytes::from_static(b"stdout"),
            ))
        };
        let shown = |c: &CommonFields| -> Vec<String> {
            c.fields()
                .iter()
                .map(|(k, v)| format!("{}={}", k.as_str(), String::from_utf8_lossy(v)))
                .collect()
        };
        l.learn(answer(Lookup::Found(meta("a"))), true, now);
        let first = l.common(stdout());
        assert!(Arc::ptr_eq(&first, &l.common(stdout())), "made once");
        assert_eq!(
            shown(&l.common(None)),
            ["pod=web", "label.app=a", "node=node-1"]
        );
        l.learn(answer(Lookup::Found(meta("b"))), true, now);
        assert_eq!(
            shown(&l.common(stdout())),
            ["pod=web", "label.app=b", "node=node-1", "stream=stdout"],
            "a relabel reaches the next events"
        );
        assert_eq!(
            shown(&first),
            ["pod=web", "label.app=a", "node=node-1", "stream=stdout"]
        );
    }

    #[test]
    fn known_is_looked_up_again_every_refresh_late_every_batch() {
        let mut l = labels();
        assert!(l.lookup_due(None, 0), "late asks every batch");
        let long_ago = Instant::now() - Duration::from_secs(60);
        l.learn(answer(Lookup::Found(meta("a"))), true, long_ago);
        assert!(!l.lookup_due(None, 0), "no refresh configured");
        assert!(l.lookup_due(Some(Duration::from_secs(30)), 0));
        l.learn(answer(Lookup::Found(meta("a"))), true, Instant::now());
        assert!(!l.lookup_due(Some(Duration::from_secs(30)), 0));
    }

    #[test]
    fn known_is_looked_up_again_when_the_generation_moves() {
        let mut l = labels();
        l.learn(answer(Lookup::Found(meta("a"))), true, Instant::now());
        l.generation = 7;
        assert!(!l.lookup_due(None, 7), "nothing changed");
        assert!(l.lookup_due(None, 8), "an answer changed: look again");
    }

    #[test]
    fn only_a_late_file_starts_waiting_and_then_holds_its_position() {
        let mut l = labels();
        assert_eq!(l.held_from(), None);
        assert!(l.start_waiting(Instant::now(), 42));
        assert!(l.is_waiting());
        assert_eq!(l.held_from(), Some(42));
        assert!(
            !l.lookup_due(Some(Duration::ZERO), 1),
            "a waiting file is not asked per batch"
        );
        let mut unwanted = Labels::new(Vec::new(), None, true);
        assert!(!unwanted.start_waiting(Instant::now(), 0));
        assert_eq!(unwanted.held_from(), None);
    }

    #[test]
    fn waiting_holds_events_up_to_its_bounds() {
        let mut l = labels();
        let mut batch = vec![pending("abc"), pending("de")];
        assert_eq!(l.hold(&mut batch, 0), None, "not waiting: send now");
        assert_eq!(batch.len(), 2);
        l.start_waiting(Instant::now(), 0);
        assert_eq!(l.hold(&mut batch, 0), Some(5));
        assert!(batch.is_empty(), "taken");
        let mut more = vec![pending("f")];
        assert_eq!(
            l.hold(&mut more, POD_HOLD_MAX_BYTES),
            None,
            "all files hold too much"
        );
        assert_eq!(more.len(), 1);
        let (held, bytes) = l.end_wait().expect("was waiting");
        assert_eq!((held.len(), bytes), (2, 5));
        assert!(matches!(l.state, PodLabels::Late(_)));
        assert_eq!(
            l.held_from(),
            None,
            "nothing held: the position may move on"
        );
        assert!(l.end_wait().is_none());
    }

    #[test]
    fn a_file_holds_at_most_pod_hold_max_events() {
        let mut l = labels();
        l.start_waiting(Instant::now(), 0);
        let mut many: Vec<_> = (0..POD_HOLD_MAX).map(|_| pending("x")).collect();
        assert_eq!(l.hold(&mut many, 0), Some(POD_HOLD_MAX));
        assert_eq!(l.hold(&mut vec![pending("y")], 0), None);
    }

    #[test]
    fn a_wait_is_over_when_answered_or_out_of_time() {
        let mut l = labels();
        let now = Instant::now();
        assert_eq!(
            l.wait_over(answer(Lookup::Pending), now),
            None,
            "not waiting"
        );
        l.start_waiting(now + Duration::from_secs(5), 0);
        assert_eq!(l.wait_over(answer(Lookup::Pending), now), Some(false));
        assert_eq!(l.wait_over(answer(Lookup::NotFound), now), Some(true));
        assert_eq!(l.wait_over(answer(Lookup::Unavailable), now), Some(true));
        assert_eq!(l.wait_over(|_| None, now), Some(true), "no API");
        let late = now + Duration::from_secs(5);
        assert_eq!(l.wait_over(answer(Lookup::Pending), late), Some(true));
    }
}
