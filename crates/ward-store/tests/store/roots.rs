//! Root rotation records (issue 20 item 3): a root and its first
//! intermediate are recorded together or not at all, a second rotation of
//! either kind is refused while one is pending, and cancelling withdraws
//! both.

use std::time::Duration;

use ward_store::{CaIntermediate, CaRoot, StoreError};

use crate::harness::{Ctx, now};

fn hex(c: char) -> String {
    c.to_string().repeat(64)
}

fn pair(root: char, int: char, overlap: Duration) -> (CaRoot, CaIntermediate) {
    let t = now();
    let first = CaIntermediate {
        fingerprint: hex(int),
        der: vec![1, 2, 3],
        key_ref: format!("intermediates/{}.key", hex(int)),
        signs_from: t + overlap,
        not_after: t + Duration::from_secs(86_400),
        created_at: t,
        cancelled_at: None,
    };
    let root = CaRoot {
        fingerprint: hex(root),
        der: vec![4, 5, 6],
        key_ref: format!("roots/{}.key", hex(root)),
        previous: hex('0'),
        new_with_old: vec![7],
        old_with_new: vec![8],
        intermediate: first.fingerprint.clone(),
        signs_from: first.signs_from,
        not_after: t + Duration::from_secs(864_000),
        created_at: t,
        cancelled_at: None,
    };
    (root, first)
}

pub(crate) async fn root_rotation_records_pair_refuse_and_cancel(ctx: Ctx) {
    let store = ctx.store().await;
    let (root, first) = pair('a', 'b', Duration::from_secs(3600));
    store.add_root(&root, &first).await.unwrap();
    assert_eq!(store.roots().await.unwrap(), vec![root.clone()]);
    assert_eq!(store.intermediates().await.unwrap(), vec![first.clone()]);

    // Pending: a second root or intermediate rotation is refused.
    let (again, again_first) = pair('c', 'd', Duration::from_secs(3600));
    let refused = store.add_root(&again, &again_first).await.unwrap_err();
    assert!(matches!(refused, StoreError::Conflict(_)), "{refused:?}");
    let refused = store.add_intermediate(&again_first).await.unwrap_err();
    assert!(matches!(refused, StoreError::Conflict(_)), "{refused:?}");
    assert_eq!(
        store.roots().await.unwrap().len(),
        1,
        "nothing half-written"
    );
    assert_eq!(store.intermediates().await.unwrap().len(), 1);

    // A root that disagrees with its intermediate is refused outright.
    let (mut odd, odd_first) = pair('e', 'f', Duration::from_secs(60));
    odd.intermediate = hex('9');
    assert!(matches!(
        store.add_root(&odd, &odd_first).await.unwrap_err(),
        StoreError::Invalid(_)
    ));

    // Cancelling withdraws both, in one go.
    assert_eq!(store.cancel_pending_intermediates(now()).await.unwrap(), 1);
    assert!(store.roots().await.unwrap()[0].cancelled_at.is_some());
    assert!(
        store.intermediates().await.unwrap()[0]
            .cancelled_at
            .is_some()
    );
    store.add_root(&again, &again_first).await.unwrap();
    assert_eq!(store.roots().await.unwrap().len(), 2);
}
