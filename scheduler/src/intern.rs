//! Small integer ids for strings that the hot path compares often (models, tools, zones,
//! classifications), and a bit set over them.

use std::sync::Arc;

use rustc_hash::FxHashMap;

#[derive(Clone, Debug, Default)]
pub(crate) struct Interner {
    ids: FxHashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Interner {
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    pub fn name(&self, id: u32) -> &Arc<str> {
        &self.names[id as usize]
    }
}

/// A growable set of small ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct BitSet(Vec<u64>);

impl BitSet {
    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> Self {
        let mut s = BitSet::default();
        for id in ids {
            s.insert(id);
        }
        s
    }

    pub fn insert(&mut self, id: u32) {
        let (w, b) = (id as usize / 64, id % 64);
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << b;
    }

    pub fn contains(&self, id: u32) -> bool {
        self.0
            .get(id as usize / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    pub fn is_superset(&self, other: &BitSet) -> bool {
        other
            .0
            .iter()
            .enumerate()
            .all(|(i, &w)| w & !self.0.get(i).copied().unwrap_or(0) == 0)
    }

    pub fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &w)| {
            // Visit only the set bits, lowest first.
            let mut rest = w;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let b = rest.trailing_zeros();
                    rest &= rest - 1;
                    (i * 64) as u32 + b
                })
            })
        })
    }
}

pub(crate) use crate::hash::stable_hash;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_sets_answer_membership_and_superset() {
        let a = BitSet::from_ids([1, 70, 3]);
        let b = BitSet::from_ids([70, 1]);
        assert!(a.contains(70) && !a.contains(2));
        assert!(a.is_superset(&b) && !b.is_superset(&a));
        assert!(a.is_superset(&BitSet::default()));
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![1, 3, 70]);
    }
}
