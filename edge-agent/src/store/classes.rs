//! The `classes` tree: per device class, the handler version the agent runs (active), the one it ran
//! before (previous, for a rollback without the cloud), and the generation of the last assignment it
//! applied, so a replayed older assignment is refused even after a restart or a withdrawal.
//!
//! Every change is one sled transaction that reads the record, checks it and writes the new one.

use edgefleet_protocol::{Assignment, ClassId, Sha256Digest, Signed, codec};
use serde::{Deserialize, Serialize};

use super::tree::CLASSES;
use super::{Store, StoreError, abort, transaction_result};

/// Largest encoded [`ClassRecord`]: two signed assignments and room for the rest.
const MAX_CLASS_RECORD_BYTES: usize = 2 * Signed::<Assignment>::MAX_LEN + 4096;

/// One handler version of a class, as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassVersion {
    /// The `Signed<Assignment>` bytes as received, so the agent can verify them again after a
    /// restart; they hold the manifest, class config and limits.
    #[serde(with = "serde_bytes")]
    pub assignment: Vec<u8>,
    /// The module's SHA-256 (its key in the `modules` tree).
    pub module_sha256: Sha256Digest,
    /// The module's version label, for status and events.
    pub version: String,
    /// When the agent applied it, in ms since the UNIX epoch.
    pub applied_at_ms: u64,
    /// The SHA-256 of the shadow module its assignment names, if any: its blob is kept too.
    #[serde(default)]
    pub shadow_sha256: Option<Sha256Digest>,
}

/// What the agent runs for one class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassRecord {
    /// The version handling the class's devices; `None` once the class is withdrawn.
    pub active: Option<ClassVersion>,
    /// The version active before, kept for a rollback.
    pub previous: Option<ClassVersion>,
    /// The generation of the last assignment applied for the class (including a withdrawal); a
    /// rollback does not change it.
    pub generation: u64,
}

impl Store {
    /// The record of `class`, if an assignment for it was ever applied.
    pub fn class(&self, class: &ClassId) -> Result<Option<ClassRecord>, StoreError> {
        self.classes
            .get(class.as_str())?
            .map(|bytes| decode(class.as_str(), &bytes))
            .transpose()
    }

    /// Every class record, in class id order (withdrawn classes included, with no active version).
    pub fn classes(&self) -> Result<Vec<(ClassId, ClassRecord)>, StoreError> {
        self.classes
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                let name = String::from_utf8_lossy(&key).into_owned();
                let class = ClassId::new(name.clone()).map_err(|e| StoreError::Corrupt {
                    tree: CLASSES,
                    key: name.clone(),
                    detail: format!("not a class id ({e}): not written by an agent"),
                })?;
                Ok((class, decode(&name, &value)?))
            })
            .collect()
    }

    /// Applies assignment `generation` of `class`: `new` becomes active, the active version becomes
    /// previous (the previous one is forgotten). Refuses a generation not newer than the applied one
    /// with [`StoreError::StaleGeneration`]. Returns the new record.
    pub fn swap_class(
        &self,
        class: &ClassId,
        generation: u64,
        new: ClassVersion,
    ) -> Result<ClassRecord, StoreError> {
        self.update_class(class, |current| {
            check_newer(class, current, generation)?;
            Ok(ClassRecord {
                previous: current.and_then(|record| record.active.clone()),
                active: Some(new.clone()),
                generation,
            })
        })
    }

    /// Swaps the active and previous versions of `class` (after the active one, module `from`, was
    /// quarantined), so a second rollback returns to it. The generation stays, so the redelivered
    /// assignment of the version left is not newer and is not applied again. Fails with
    /// [`StoreError::NoPreviousVersion`] when there is nothing to go back to, and with
    /// [`StoreError::NotActive`] when `from` is not the active version (another switch came first).
    pub fn rollback_class(
        &self,
        class: &ClassId,
        from: &Sha256Digest,
    ) -> Result<ClassRecord, StoreError> {
        self.update_class(class, |current| match current {
            Some(record) if record.active.as_ref().map(|a| &a.module_sha256) != Some(from) => {
                Err(StoreError::NotActive {
                    class: class.clone(),
                    module: *from,
                })
            }
            Some(record) if record.previous.is_some() => Ok(ClassRecord {
                active: record.previous.clone(),
                previous: record.active.clone(),
                generation: record.generation,
            }),
            _ => Err(StoreError::NoPreviousVersion {
                class: class.clone(),
            }),
        })
    }

    /// Applies withdrawal `generation` of `class`: no version stays, but the record keeps the
    /// generation, so an older assignment replayed later is still refused. The class's device state
    /// stays, for a class assigned again. Refuses a stale generation like [`Store::swap_class`].
    pub fn withdraw_class(
        &self,
        class: &ClassId,
        generation: u64,
    ) -> Result<ClassRecord, StoreError> {
        self.update_class(class, |current| {
            check_newer(class, current, generation)?;
            Ok(ClassRecord {
                active: None,
                previous: None,
                generation,
            })
        })
    }

    /// Deletes the record of `class`, generation included; returns whether there was one. For a
    /// record reported corrupt: the class's retained assignment is then applied afresh.
    pub fn remove_class(&self, class: &ClassId) -> Result<bool, StoreError> {
        Ok(self.classes.remove(class.as_str())?.is_some())
    }

    /// Replaces the record of `class` with what `change` makes of the current one, in one transaction.
    fn update_class(
        &self,
        class: &ClassId,
        change: impl Fn(Option<&ClassRecord>) -> Result<ClassRecord, StoreError>,
    ) -> Result<ClassRecord, StoreError> {
        let key = class.as_str();
        transaction_result(self.classes.transaction(|tx| {
            let current = match tx.get(key)? {
                Some(bytes) => Some(decode(key, &bytes).map_err(abort)?),
                None => None,
            };
            let record = change(current.as_ref()).map_err(abort)?;
            let encoded = codec::encode(&record);
            if encoded.len() > MAX_CLASS_RECORD_BYTES {
                return Err(abort(StoreError::TooLarge {
                    what: format!("the record of class {class}"),
                    len: encoded.len(),
                    max: MAX_CLASS_RECORD_BYTES,
                }));
            }
            tx.insert(key, encoded)?;
            Ok(record)
        }))
    }
}

fn check_newer(
    class: &ClassId,
    current: Option<&ClassRecord>,
    generation: u64,
) -> Result<(), StoreError> {
    match current {
        Some(record) if generation <= record.generation => Err(StoreError::StaleGeneration {
            class: class.clone(),
            applied: record.generation,
            offered: generation,
        }),
        _ => Ok(()),
    }
}

fn decode(class: &str, bytes: &[u8]) -> Result<ClassRecord, StoreError> {
    codec::decode(bytes, MAX_CLASS_RECORD_BYTES).map_err(|e| StoreError::Corrupt {
        tree: CLASSES,
        key: class.to_owned(),
        detail: format!(
            "{e}; remove the record (Store::remove_class) and apply the class's retained assignment again"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(label: &str) -> ClassVersion {
        ClassVersion {
            assignment: format!("signed assignment {label}").into_bytes(),
            module_sha256: Sha256Digest::of(label.as_bytes()),
            version: label.to_owned(),
            applied_at_ms: 1_700_000_000_000,
            shadow_sha256: None,
        }
    }

    fn thermo() -> ClassId {
        ClassId::new("thermo").unwrap()
    }

    #[test]
    fn swap_moves_active_to_previous_and_rollback_swaps_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.class(&thermo()).unwrap(), None);
        let v1 = Sha256Digest::of(b"1.0.0");
        assert!(matches!(
            store.rollback_class(&thermo(), &v1),
            Err(StoreError::NoPreviousVersion { .. })
        ));

        let first = store.swap_class(&thermo(), 3, version("1.0.0")).unwrap();
        assert_eq!(first.active, Some(version("1.0.0")));
        assert_eq!(first.previous, None);
        assert!(matches!(
            store.rollback_class(&thermo(), &v1),
            Err(StoreError::NoPreviousVersion { .. })
        ));

        store.swap_class(&thermo(), 4, version("1.1.0")).unwrap();
        let third = store.swap_class(&thermo(), 9, version("2.0.0")).unwrap();
        assert_eq!(
            third,
            ClassRecord {
                active: Some(version("2.0.0")),
                previous: Some(version("1.1.0")),
                generation: 9,
            }
        );

        let v2 = Sha256Digest::of(b"2.0.0");
        assert!(
            matches!(
                store.rollback_class(&thermo(), &v1),
                Err(StoreError::NotActive { .. })
            ),
            "only the active version is rolled back from"
        );
        let rolled_back = store.rollback_class(&thermo(), &v2).unwrap();
        assert_eq!(rolled_back.active, Some(version("1.1.0")));
        assert_eq!(rolled_back.previous, Some(version("2.0.0")));
        assert_eq!(rolled_back.generation, 9);
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.class(&thermo()).unwrap(), Some(rolled_back.clone()));
        assert_eq!(store.classes().unwrap(), vec![(thermo(), rolled_back)]);
        assert_eq!(
            store
                .rollback_class(&thermo(), &Sha256Digest::of(b"1.1.0"))
                .unwrap()
                .active,
            Some(version("2.0.0"))
        );
    }

    #[test]
    fn stale_generations_are_refused_even_after_a_withdrawal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.swap_class(&thermo(), 5, version("1.0.0")).unwrap();
        for stale in [4, 5] {
            match store.swap_class(&thermo(), stale, version("0.9.0")) {
                Err(StoreError::StaleGeneration {
                    applied, offered, ..
                }) => assert_eq!((applied, offered), (5, stale)),
                other => panic!("expected StaleGeneration, got {other:?}"),
            }
        }
        assert_eq!(
            store.class(&thermo()).unwrap().unwrap().active,
            Some(version("1.0.0"))
        );

        let withdrawn = store.withdraw_class(&thermo(), 6).unwrap();
        assert_eq!(
            withdrawn,
            ClassRecord {
                active: None,
                previous: None,
                generation: 6
            }
        );
        assert!(matches!(
            store.swap_class(&thermo(), 5, version("1.0.0")),
            Err(StoreError::StaleGeneration { applied: 6, .. })
        ));
        assert!(matches!(
            store.withdraw_class(&thermo(), 6),
            Err(StoreError::StaleGeneration { .. })
        ));
        let again = store.swap_class(&thermo(), 7, version("1.2.0")).unwrap();
        assert_eq!(again.active, Some(version("1.2.0")));
        assert_eq!(again.previous, None);
    }

    #[test]
    fn classes_are_independent_and_listed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let meter = ClassId::new("meter").unwrap();
        store.swap_class(&thermo(), 1, version("t1")).unwrap();
        store.swap_class(&meter, 1, version("m1")).unwrap();
        store.swap_class(&meter, 2, version("m2")).unwrap();
        let listed: Vec<_> = store
            .classes()
            .unwrap()
            .into_iter()
            .map(|(class, record)| (class.to_string(), record.active.unwrap().version))
            .collect();
        assert_eq!(
            listed,
            [
                ("meter".into(), "m2".into()),
                ("thermo".into(), "t1".into())
            ]
        );
    }

    #[test]
    fn a_damaged_record_is_reported_naming_its_class() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.swap_class(&thermo(), 1, version("1.0.0")).unwrap();
        store
            .classes
            .insert("thermo", b"\xa1garbage".as_slice())
            .unwrap();
        for result in [
            store.class(&thermo()).map(|_| ()),
            store.classes().map(|_| ()),
            store
                .rollback_class(&thermo(), &Sha256Digest::of(b"1.0.0"))
                .map(|_| ()),
        ] {
            assert!(
                matches!(&result, Err(StoreError::Corrupt { tree: CLASSES, key, .. }) if key == "thermo"),
                "{result:?}"
            );
        }
        assert!(store.remove_class(&thermo()).unwrap());
        assert!(!store.remove_class(&thermo()).unwrap());
        assert_eq!(store.class(&thermo()).unwrap(), None);
        store.swap_class(&thermo(), 1, version("1.0.0")).unwrap();
        store.classes.insert("not/an id", b"".as_slice()).unwrap();
        assert!(matches!(
            store.classes(),
            Err(StoreError::Corrupt { tree: CLASSES, key, .. }) if key == "not/an id"
        ));
    }

    #[test]
    fn oversized_records_are_refused_and_leave_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.swap_class(&thermo(), 1, version("1.0.0")).unwrap();
        let huge = ClassVersion {
            assignment: vec![0; MAX_CLASS_RECORD_BYTES],
            ..version("2.0.0")
        };
        assert!(matches!(
            store.swap_class(&thermo(), 2, huge),
            Err(StoreError::TooLarge { .. })
        ));
        let record = store.class(&thermo()).unwrap().unwrap();
        assert_eq!(
            (record.generation, record.active),
            (1, Some(version("1.0.0")))
        );
    }
}
