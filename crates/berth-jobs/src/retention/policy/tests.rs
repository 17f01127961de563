//! The decisions of retention policies, each keep entry alone and combined, with the
//! clock and the pull times set by the test.

use berth_core::ErrorKind;
use berth_meta::{RepoState, TagState, TopManifest};

use super::{Compiled, Policy, Verdict};

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn policy(json: &str) -> Compiled {
    serde_json::from_str::<Policy>(json).unwrap().compile().unwrap()
}

/// `(tag, digest, pushed days ago, pulled days ago)`.
fn state(tags: &[(&str, &str, i64, Option<i64>)], untagged: &[&str]) -> RepoState {
    let mut manifests: Vec<TopManifest> = tags
        .iter()
        .map(|t| t.1)
        .chain(untagged.iter().copied())
        .map(|d| TopManifest { digest: d.to_owned(), pushed_at: NOW - 100 * DAY })
        .collect();
    manifests.sort_by(|a, b| a.digest.cmp(&b.digest));
    manifests.dedup();
    RepoState {
        tags: tags
            .iter()
            .map(|&(tag, digest, pushed, pulled)| TagState {
                tag: tag.to_owned(),
                digest: digest.to_owned(),
                pushed_at: NOW - pushed * DAY,
                last_pulled_at: pulled.map(|p| NOW - p * DAY),
            })
            .collect(),
        manifests,
    }
}

fn kept(v: &Verdict) -> Vec<&str> {
    v.kept.iter().map(|t| t.tag.as_str()).collect()
}

fn deleted(v: &Verdict) -> Vec<&str> {
    v.deleted_tags.iter().map(|t| t.tag.as_str()).collect()
}

/// Five tags: pushed 1, 3, 5, 10 and 30 days ago; pulled (a) 2 days ago, (c) 20 days ago.
fn five() -> RepoState {
    state(
        &[
            ("a", "m1", 1, Some(2)),
            ("b", "m2", 3, None),
            ("c", "m3", 5, Some(20)),
            ("v1", "m4", 10, None),
            ("v10", "m5", 30, None),
        ],
        &[],
    )
}

#[test]
fn each_keep_entry_alone_keeps_what_it_names_and_deletes_the_rest() {
    let cases: [(&str, &[&str]); 7] = [
        (r#"{"most_recently_pushed": 2}"#, &["a", "b"]),
        (r#"{"most_recently_pulled": 1}"#, &["a"]),
        (r#"{"most_recently_pulled": 5}"#, &["a", "c"]),
        (r#"{"pushed_within_days": 7}"#, &["a", "b", "c"]),
        (r#"{"pulled_within_days": 7}"#, &["a"]),
        (r#"{"tags_matching": {"glob": "v?"}}"#, &["v1"]),
        (r#"{"tags_matching": {"regex": "v1|a"}}"#, &["a", "v1"]),
    ];
    for (keep, expected) in cases {
        let p = policy(&format!(r#"{{"rules":[{{"keep":[{keep}]}}]}}"#));
        let v = p.decide("team/app", &five(), NOW).unwrap();
        assert_eq!(kept(&v), expected, "{keep}");
        let gone: Vec<&str> = ["a", "b", "c", "v1", "v10"].into_iter().filter(|t| !expected.contains(t)).collect();
        assert_eq!(deleted(&v), gone, "{keep}");
        assert!(v.kept.iter().all(|t| t.reasons.len() == 1), "{keep}: one reason each");
        assert!(v.deleted_manifests.is_empty(), "untagged manifests stay unless asked");
    }
}

#[test]
fn within_days_is_inclusive_at_the_boundary() {
    let s = state(&[("edge", "m1", 7, Some(7)), ("past", "m2", 7, Some(8))], &[]);
    let mut s2 = s.clone();
    s2.tags[1].pushed_at -= 1;
    let v = policy(r#"{"rules":[{"keep":[{"pushed_within_days":7}]}]}"#).decide("r", &s2, NOW).unwrap();
    assert_eq!((kept(&v), deleted(&v)), (vec!["edge"], vec!["past"]));
    let v = policy(r#"{"rules":[{"keep":[{"pulled_within_days":7}]}]}"#).decide("r", &s, NOW).unwrap();
    assert_eq!((kept(&v), deleted(&v)), (vec!["edge"], vec!["past"]));
}

#[test]
fn ties_in_push_time_go_by_tag_name() {
    let s = state(&[("x", "m1", 1, None), ("b", "m2", 1, None), ("m", "m3", 1, None)], &[]);
    let v = policy(r#"{"rules":[{"keep":[{"most_recently_pushed":2}]}]}"#).decide("r", &s, NOW).unwrap();
    assert_eq!(deleted(&v), ["x"]);
}

#[test]
fn keep_entries_combine_a_tag_kept_by_any_stays_with_every_reason() {
    let p = policy(
        r#"{"rules":[{"keep":[{"most_recently_pushed":1},{"tags_matching":{"glob":"v*"}}]},
                     {"keep":[{"pulled_within_days":30}]}]}"#,
    );
    let v = p.decide("team/app", &five(), NOW).unwrap();
    assert_eq!(kept(&v), ["a", "c", "v1", "v10"]);
    assert_eq!(deleted(&v), ["b"]);
    assert_eq!(v.kept[0].reasons, ["most_recently_pushed 1", "pulled_within_days 30"]);
    assert_eq!(v.kept[2].reasons, ["tags_matching glob \"v*\""]);
    assert_eq!(v.deleted_tags[0].reason, "no keep entry keeps it");
}

#[test]
fn rules_apply_only_to_the_repositories_they_match() {
    let p = policy(r#"{"rules":[{"repositories":["team/app-*"],"keep":[{"most_recently_pushed":1}]}]}"#);
    assert_eq!(p.decide("team/other", &five(), NOW), None, "no rule applies: nothing is decided");
    assert_eq!(deleted(&p.decide("team/app-web", &five(), NOW).unwrap()), ["b", "c", "v1", "v10"]);
    // A second rule for every repository adds what it keeps where both apply.
    let p = policy(
        r#"{"rules":[{"repositories":["team/app-*"],"keep":[{"most_recently_pushed":1}]},
                     {"keep":[{"tags_matching":{"regex":"v[0-9]+"}}]}]}"#,
    );
    assert_eq!(kept(&p.decide("team/other", &five(), NOW).unwrap()), ["v1", "v10"]);
    assert_eq!(kept(&p.decide("team/app-web", &five(), NOW).unwrap()), ["a", "v1", "v10"]);
}

#[test]
fn without_keep_entries_every_tag_is_kept() {
    for json in [r#"{"rules":[{}]}"#, r#"{"rules":[{"delete_untagged":true}]}"#] {
        let v = policy(json).decide("r", &five(), NOW).unwrap();
        assert_eq!(kept(&v).len(), 5, "{json}");
        assert!(v.deleted_tags.is_empty());
    }
    assert_eq!(policy(r#"{"rules":[]}"#).decide("r", &five(), NOW), None, "an empty policy deletes nothing");
}

#[test]
fn delete_untagged_takes_untagged_manifests_and_those_whose_tags_all_go() {
    let s = state(&[("keep", "m1", 1, None), ("old", "m1", 50, None), ("gone", "m2", 50, None)], &["m0"]);
    let v = policy(r#"{"rules":[{"keep":[{"pushed_within_days":10}],"delete_untagged":true}]}"#)
        .decide("r", &s, NOW)
        .unwrap();
    assert_eq!(deleted(&v), ["old", "gone"]);
    let manifests: Vec<(&str, &str)> =
        v.deleted_manifests.iter().map(|m| (m.digest.as_str(), m.reason.as_str())).collect();
    assert_eq!(
        manifests,
        [("m0", "delete_untagged: untagged"), ("m2", "delete_untagged: its tags are deleted")],
        "m1 keeps a tag"
    );
}

#[test]
fn bad_policies_are_refused_with_a_message_naming_the_entry() {
    let refused = |json: &str| {
        let e = serde_json::from_str::<Policy>(json).unwrap().compile().unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest, "{json}");
        e.message().to_owned()
    };
    let m = refused(r#"{"rules":[{"keep":[{"most_recently_pushed":1},{"tags_matching":{"regex":"v(1"}}]}]}"#);
    assert!(m.contains("rules[0].keep[1]") && m.contains("invalid regex \"v(1\""), "{m}");
    let m = refused(r#"{"rules":[{},{"keep":[{"tags_matching":{"glob":"v/*"}}]}]}"#);
    assert!(m.contains("rules[1].keep[0]") && m.contains("'/'"), "{m}");
    let m = refused(r#"{"rules":[{"repositories":["Team/*"]}]}"#);
    assert!(m.contains("rules[0].repositories") && m.contains("'T'"), "{m}");
    let m = refused(r#"{"rules":[{"keep":[{"pulled_within_days":0}]}]}"#);
    assert!(m.contains("keeps nothing"), "{m}");
    assert!(refused(r#"{"rules":[{"keep":[{"tags_matching":{"glob":""}}]}]}"#).contains("1 to 256"));
    // Unknown fields and entries are refused by the parser (the API says so as a 400).
    for json in [r#"{"rules":[{"keep_all":true}]}"#, r#"{"rules":[{"keep":[{"newest":1}]}]}"#, r#"{"rule":[]}"#] {
        assert!(serde_json::from_str::<Policy>(json).is_err(), "{json}");
    }
}

#[test]
fn a_policy_round_trips_through_its_json() {
    let json = r#"{"rules":[{"repositories":["team/*"],"keep":[{"most_recently_pulled":3},{"tags_matching":{"regex":"^v"}}],"delete_untagged":true},{"keep":[{"pushed_within_days":5}]}]}"#;
    let p: Policy = serde_json::from_str(json).unwrap();
    assert_eq!(serde_json::to_string(&p).unwrap(), json);
}
