//! The raw-pointer layer the C, C++ and Python front ends call: every check it
//! promises (null, size 0, wrap-around, overlapping layers of one key, mismatched lengths,
//! bad directions) answers -3000 before any byte moves, and good calls round-trip.

mod common;

use std::ffi::c_void;
use std::ptr;

use common::*;
use memcache_client::ReplicateConfig;

const G2H: i32 = 2;
const H2G: i32 = 3;

/// Keys as the raw layer takes them.
fn keys<'a>(ks: &[&'a str]) -> Vec<&'a [u8]> {
    ks.iter().map(|k| k.as_bytes()).collect()
}

fn rc() -> ReplicateConfig {
    ReplicateConfig::default()
}

fn cptr(b: &[u8]) -> *const c_void {
    b.as_ptr().cast()
}

fn mptr(b: &mut [u8]) -> *mut c_void {
    b.as_mut_ptr().cast()
}

#[test]
fn put_and_get_through_pointers_round_trip() {
    let (_pool, store) = started(8 * MIB);
    let data = pattern(1, 100_000);
    let mut out = vec![0u8; 100_000];
    let mut larger = vec![0x33u8; 100_500];
    // SAFETY: every pointer addresses the stated number of live bytes.
    unsafe {
        store
            .put_from_ptr(b"p", cptr(&data), data.len(), H2G, &rc())
            .unwrap();
        assert_eq!(
            store.get_into_ptr(b"p", mptr(&mut out), out.len(), G2H),
            Ok(100_000)
        );
        assert_eq!(
            store.get_into_ptr(b"p", mptr(&mut larger), larger.len(), G2H),
            Ok(100_000)
        );
    }
    assert_eq!(out, data);
    assert_eq!(&larger[..100_000], &data[..]);
    assert!(larger[100_000..].iter().all(|&b| b == 0x33));
}

#[test]
fn null_and_empty_buffers_are_3000() {
    let (pool, store) = started(8 * MIB);
    let data = [1u8; 64];
    let mut out = [0x44u8; 64];
    // SAFETY: the pointers are null, or address the stated number of live bytes.
    unsafe {
        assert_eq!(
            code(&store.put_from_ptr(b"k", ptr::null(), 64, H2G, &rc())),
            -3000
        );
        assert_eq!(
            code(&store.put_from_ptr(b"k", cptr(&data), 0, H2G, &rc())),
            -3000
        );
        assert_eq!(
            code(&store.put_from_layers_ptr(b"k", &[ptr::null()], &[64], H2G, &rc())),
            -3000
        );
        assert_eq!(
            code(&store.put_from_layers_ptr(
                b"k",
                &[cptr(&data), cptr(&data)],
                &[64, 0],
                H2G,
                &rc()
            )),
            -3000
        );
        assert_eq!(
            code(&store.put_from_layers_ptr(b"k", &[], &[], H2G, &rc())),
            -3000
        );
        assert_eq!(object_count(&pool), 0);

        store
            .put_from_ptr(b"k", cptr(&data), 64, H2G, &rc())
            .unwrap();
        assert_eq!(
            code(&store.get_into_ptr(b"k", ptr::null_mut(), 64, G2H)),
            -3000
        );
        assert_eq!(
            code(&store.get_into_ptr(b"k", mptr(&mut out), 0, G2H)),
            -3000
        );
        assert_eq!(
            code(&store.get_into_layers_ptr(b"k", &[ptr::null_mut()], &[64], G2H)),
            -3000
        );
        assert_eq!(code(&store.get_into_layers_ptr(b"k", &[], &[], G2H)), -3000);
    }
    assert_eq!(out, [0x44u8; 64]);
}

#[test]
fn regions_that_wrap_or_overflow_are_3000() {
    let (pool, store) = started(8 * MIB);
    let near_end = (usize::MAX - 15) as *const c_void;
    let mut out = [0u8; 16];
    // SAFETY: the layer promises to refuse these regions before touching them.
    unsafe {
        assert_eq!(
            code(&store.put_from_ptr(b"k", near_end, 64, H2G, &rc())),
            -3000
        );
        assert_eq!(
            code(&store.put_from_ptr(b"k", cptr(&out), isize::MAX as usize + 1, H2G, &rc())),
            -3000
        );
        assert_eq!(
            code(&store.get_into_ptr(b"k", near_end.cast_mut(), 64, G2H)),
            -3000
        );
        assert_eq!(
            code(&store.get_into_ptr(b"k", mptr(&mut out), isize::MAX as usize + 1, G2H)),
            -3000
        );
    }
    assert_eq!(code(&store.register_buffer_ptr(near_end, 64)), -3000);
    assert_eq!(object_count(&pool), 0);
}

#[test]
fn bad_copy_directions_are_3000() {
    let (pool, store) = started(8 * MIB);
    let data = [1u8; 64];
    let mut out = [0x55u8; 64];
    // SAFETY: every pointer addresses the stated number of live bytes.
    unsafe {
        for direct in [-1, 0, 1, 2, 4, 99] {
            assert_eq!(
                code(&store.put_from_ptr(b"k", cptr(&data), 64, direct, &rc())),
                -3000,
                "put direct {direct}"
            );
            assert_eq!(
                codes(&store.batch_put_from_ptr(
                    &keys(&["k"]),
                    &[cptr(&data)],
                    &[64],
                    direct,
                    &rc()
                )),
                [-3000],
                "batch put direct {direct}"
            );
        }
        assert_eq!(object_count(&pool), 0);
        store
            .put_from_ptr(b"k", cptr(&data), 64, H2G, &rc())
            .unwrap();
        for direct in [-1, 0, 1, 3, 4, 99] {
            assert_eq!(
                code(&store.get_into_ptr(b"k", mptr(&mut out), 64, direct)),
                -3000,
                "get direct {direct}"
            );
            assert_eq!(
                codes(&store.batch_get_into_ptr(&keys(&["k"]), &[mptr(&mut out)], &[64], direct)),
                [-3000],
                "batch get direct {direct}"
            );
        }
    }
    assert_eq!(out, [0x55u8; 64]);
}

#[test]
fn overlap_inside_one_key_is_3000_for_that_key_only() {
    let (_pool, store) = started(8 * MIB);
    let a = pattern(1, 100);
    let b = pattern(2, 100);
    let mut dst = vec![0x66u8; 300];
    let base = mptr(&mut dst);
    // SAFETY: every region lies inside `dst` (300 bytes) or the source vectors.
    unsafe {
        store.put_from_ptr(b"a", cptr(&a), 100, H2G, &rc()).unwrap();
        store.put_from_ptr(b"b", cptr(&b), 100, H2G, &rc()).unwrap();
        let second = base.cast::<u8>().add(50).cast::<c_void>();
        assert_eq!(
            code(&store.get_into_layers_ptr(b"a", &[base, second], &[60, 60], G2H)),
            -3000
        );
        assert!(dst.iter().all(|&x| x == 0x66));
        // Key "a"'s two layers overlap; key "b" is fine and is read.
        let la: [*mut c_void; 2] = [base, second];
        let lb: [*mut c_void; 2] = [
            base.cast::<u8>().add(200).cast(),
            base.cast::<u8>().add(250).cast(),
        ];
        let r = store.batch_get_into_layers_ptr(
            &keys(&["a", "b"]),
            &[&la, &lb],
            &[&[60, 60], &[50, 50]],
            G2H,
        );
        assert_eq!(codes(&r), [-3000, 0]);
        assert!(dst[..200].iter().all(|&x| x == 0x66));
        assert_eq!(&dst[200..], &b[..]);

        // Adjacent (touching, not overlapping) regions are fine.
        let next = base.cast::<u8>().add(100).cast::<c_void>();
        assert_eq!(
            store.batch_get_into_ptr(&keys(&["a", "b"]), &[base, next], &[100, 100], G2H),
            [Ok(100), Ok(100)]
        );
    }
    assert_eq!(&dst[..100], &a[..]);
    assert_eq!(&dst[100..200], &b[..]);
}

#[test]
fn destinations_overlapping_across_keys_are_served_in_key_order() {
    let (_pool, store) = started(8 * MIB);
    let objs: Vec<Vec<u8>> = (1..=3).map(|s| pattern(s, 100)).collect();
    let ks = keys(&["x", "y", "z"]);
    let mut dst = vec![0x66u8; 300];
    let base = mptr(&mut dst);
    // SAFETY: every region lies inside `dst` (300 bytes) or the source vectors.
    unsafe {
        for (k, o) in ks.iter().zip(&objs) {
            store.put_from_ptr(k, cptr(o), 100, H2G, &rc()).unwrap();
        }
        // The same buffer for all three keys: the last key's bytes win.
        assert_eq!(
            store.batch_get_into_ptr(&ks, &[base, base, base], &[100, 100, 100], G2H),
            [Ok(100), Ok(100), Ok(100)]
        );
        assert_eq!(&dst[..100], &objs[2][..]);
        assert!(dst[100..].iter().all(|&x| x == 0x66));

        // Partial overlaps: x at 0..100, y at 50..150 (overlaps x), z at 150..250
        // (disjoint from y, read in y's run).
        dst.fill(0x66);
        let base = mptr(&mut dst);
        let at = |off: usize| base.cast::<u8>().add(off).cast::<c_void>();
        assert_eq!(
            store.batch_get_into_ptr(&ks, &[at(0), at(50), at(150)], &[100, 100, 100], G2H),
            [Ok(100), Ok(100), Ok(100)]
        );
        assert_eq!(&dst[..50], &objs[0][..50]);
        assert_eq!(&dst[50..150], &objs[1][..]);
        assert_eq!(&dst[150..250], &objs[2][..]);
        assert!(dst[250..].iter().all(|&x| x == 0x66));

        // Layered: z's second layer overlaps x's only layer; y is disjoint from both.
        dst.fill(0x66);
        let base = mptr(&mut dst);
        let at = |off: usize| base.cast::<u8>().add(off).cast::<c_void>();
        let lx: [*mut c_void; 1] = [at(0)];
        let ly: [*mut c_void; 1] = [at(100)];
        let lz: [*mut c_void; 2] = [at(200), at(20)];
        let r = store.batch_get_into_layers_ptr(
            &ks,
            &[&lx, &ly, &lz],
            &[&[100], &[100], &[40, 60]],
            G2H,
        );
        assert_eq!(codes(&r), [0, 0, 0]);
    }
    assert_eq!(&dst[..20], &objs[0][..20]);
    assert_eq!(&dst[20..80], &objs[2][40..]);
    assert_eq!(&dst[80..100], &objs[0][80..]);
    assert_eq!(&dst[100..200], &objs[1][..]);
    assert_eq!(&dst[200..240], &objs[2][..40]);
    assert!(dst[240..].iter().all(|&x| x == 0x66));
}

#[test]
fn mismatched_lengths_are_3000_for_every_entry() {
    let (pool, store) = started(8 * MIB);
    let data = [1u8; 64];
    let mut out = [0x77u8; 64];
    let p = cptr(&data);
    // SAFETY: every pointer addresses the stated number of live bytes.
    unsafe {
        assert_eq!(
            codes(&store.batch_put_from_ptr(&keys(&["a", "b"]), &[p], &[64, 64], H2G, &rc())),
            [-3000, -3000]
        );
        assert_eq!(
            codes(&store.batch_put_from_ptr(&keys(&["a", "b"]), &[p, p], &[64], H2G, &rc())),
            [-3000, -3000]
        );
        assert_eq!(
            codes(&store.batch_put_from_ptr(&keys(&["a"]), &[p, p], &[64, 64], H2G, &rc())),
            [-3000]
        );
        assert_eq!(
            code(&store.put_from_layers_ptr(b"a", &[p, p], &[64], H2G, &rc())),
            -3000
        );
        assert_eq!(
            codes(&store.batch_put_from_layers_ptr(
                &keys(&["a", "b"]),
                &[&[p]],
                &[&[64], &[64]],
                H2G,
                &rc()
            )),
            [-3000, -3000]
        );
        assert_eq!(object_count(&pool), 0);

        store.put_from_ptr(b"a", p, 64, H2G, &rc()).unwrap();
        let o = mptr(&mut out);
        assert_eq!(
            codes(&store.batch_get_into_ptr(&keys(&["a", "b"]), &[o], &[64], G2H)),
            [-3000, -3000]
        );
        assert_eq!(
            codes(&store.batch_get_into_ptr(&keys(&["a"]), &[o], &[64, 64], G2H)),
            [-3000]
        );
        assert_eq!(
            code(&store.get_into_layers_ptr(b"a", &[o], &[32, 32], G2H)),
            -3000
        );
        assert_eq!(
            codes(&store.batch_get_into_layers_ptr(&keys(&["a"]), &[&[o]], &[&[32, 32]], G2H)),
            [-3000]
        );
    }
    assert_eq!(out, [0x77u8; 64]);
}

#[test]
fn batch_and_layer_pointer_calls_round_trip() {
    let (_pool, store) = started(16 * MIB);
    let keys: Vec<Vec<u8>> = (0..4).map(|i| format!("rk{i}").into_bytes()).collect();
    let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let data: Vec<Vec<u8>> = (0..4)
        .map(|i| pattern(i, 10_000 + 3_000 * i as usize))
        .collect();
    let ptrs: Vec<*const c_void> = data.iter().map(|d| cptr(d)).collect();
    let sizes: Vec<usize> = data.iter().map(Vec::len).collect();
    let mut outs: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n]).collect();
    let out_ptrs: Vec<*mut c_void> = outs.iter_mut().map(|o| mptr(o)).collect();

    // Layered: 3 keys of 3 layers each.
    let lkeys: [&[u8]; 3] = [b"l0", b"l1", b"l2"];
    let layers: Vec<Vec<Vec<u8>>> = (0..3u64)
        .map(|k| {
            (0..3u64)
                .map(|l| pattern(100 + k * 3 + l, 4096 + 1000 * l as usize))
                .collect()
        })
        .collect();
    let lptrs: Vec<Vec<*const c_void>> = layers
        .iter()
        .map(|o| o.iter().map(|l| cptr(l)).collect())
        .collect();
    let lsizes: Vec<Vec<usize>> = layers
        .iter()
        .map(|o| o.iter().map(Vec::len).collect())
        .collect();
    let lptr_refs: Vec<&[*const c_void]> = lptrs.iter().map(Vec::as_slice).collect();
    let lsize_refs: Vec<&[usize]> = lsizes.iter().map(Vec::as_slice).collect();
    let mut louts: Vec<Vec<Vec<u8>>> = lsizes
        .iter()
        .map(|s| s.iter().map(|&n| vec![0u8; n]).collect())
        .collect();
    let lout_ptrs: Vec<Vec<*mut c_void>> = louts
        .iter_mut()
        .map(|o| o.iter_mut().map(|l| mptr(l)).collect())
        .collect();
    let lout_refs: Vec<&[*mut c_void]> = lout_ptrs.iter().map(Vec::as_slice).collect();

    // SAFETY: every pointer addresses the stated number of live bytes, and the
    // destinations are distinct vectors.
    unsafe {
        let put = store.batch_put_from_ptr(&key_refs, &ptrs, &sizes, H2G, &rc());
        assert_eq!(codes(&put), [0; 4]);
        let got = store.batch_get_into_ptr(&key_refs, &out_ptrs, &sizes, G2H);
        assert_eq!(got, sizes.iter().map(|&n| Ok(n as u64)).collect::<Vec<_>>());

        let put = store.batch_put_from_layers_ptr(&lkeys, &lptr_refs, &lsize_refs, H2G, &rc());
        assert_eq!(codes(&put), [0; 3]);
        let got = store.batch_get_into_layers_ptr(&lkeys, &lout_refs, &lsize_refs, G2H);
        assert_eq!(codes(&got), [0; 3]);

        // Single-key layered calls.
        store
            .put_from_layers_ptr(b"single", lptr_refs[0], &lsizes[0], H2G, &rc())
            .unwrap();
        let mut flat = vec![0u8; lsizes[0].iter().sum()];
        assert_eq!(
            store.get_into_layers_ptr(b"single", &[mptr(&mut flat)], &[flat.len()], G2H),
            Ok(flat.len() as u64)
        );
        assert_eq!(flat, layers[0].concat());
    }
    assert_eq!(outs, data);
    assert_eq!(louts, layers);
}

#[test]
fn a_bad_buffer_in_a_batch_put_fails_only_its_key() {
    let (pool, store) = started(8 * MIB);
    let a = pattern(1, 1000);
    let c = pattern(3, 3000);
    // SAFETY: the non-null pointers address the stated number of live bytes.
    unsafe {
        let r = store.batch_put_from_ptr(
            &keys(&["a", "b", "c", "d"]),
            &[cptr(&a), ptr::null(), cptr(&c), cptr(&c)],
            &[1000, 2000, 3000, 0],
            H2G,
            &rc(),
        );
        assert_eq!(codes(&r), [0, -3000, 0, -3000]);

        let l: [*const c_void; 2] = [cptr(&a), cptr(&c)];
        let r = store.batch_put_from_layers_ptr(
            &keys(&["la", "lb", "lc"]),
            &[&l, &l[..1], &l],
            &[&[1000, 3000], &[1000, 5], &[1000, 3000]],
            H2G,
            &rc(),
        );
        assert_eq!(codes(&r), [0, -3000, 0]);
    }
    assert_eq!(object_count(&pool), 4);
    assert_eq!(store.get("a").unwrap(), a);
    assert_eq!(store.get("c").unwrap(), c);
    assert_eq!(store.get("la").unwrap(), [&a[..], &c[..]].concat());
    assert_eq!(
        store.batch_is_exist(&["b", "d", "lb"]),
        [Ok(false), Ok(false), Ok(false)]
    );
}

/// The spec: "Batch calls return one code per key, in order; a failure of one key
/// never hides the result of another." A null destination for one key is that key's
/// failure (as it is for `batch_put_from_ptr`), so the other keys must still be read.
#[test]
fn a_bad_buffer_in_a_batch_get_fails_only_its_key() {
    let (_pool, store) = started(8 * MIB);
    let a = pattern(1, 1000);
    let c = pattern(3, 3000);
    store.put("a", &a).unwrap();
    store.put("c", &c).unwrap();
    let mut out_a = vec![0u8; 1000];
    let mut out_c = vec![0u8; 3000];
    // SAFETY: the non-null pointers address the stated number of live bytes.
    let r = unsafe {
        store.batch_get_into_ptr(
            &keys(&["a", "b", "c"]),
            &[mptr(&mut out_a), ptr::null_mut(), mptr(&mut out_c)],
            &[1000, 2000, 3000],
            G2H,
        )
    };
    assert_eq!(codes(&r), [0, -3000, 0]);
    assert_eq!(out_a, a);
    assert_eq!(out_c, c);
}

#[test]
fn register_buffer_ptr_checks_its_region() {
    let pool = pool();
    let store = client(&pool, 8 * MIB);
    let buf = vec![0u8; 8192];
    let p = cptr(&buf);
    assert_eq!(code(&store.register_buffer_ptr(ptr::null(), 64)), -3000);
    assert_eq!(code(&store.register_buffer_ptr(p, 0)), -3000);
    // A valid region before init: not initialised.
    assert_eq!(code(&store.register_buffer_ptr(p, 8192)), -3019);

    store.init(0, true).unwrap();
    assert_eq!(code(&store.register_buffer_ptr(ptr::null(), 64)), -3000);
    assert_eq!(code(&store.register_buffer_ptr(p, 0)), -3000);
    store.register_buffer_ptr(p, 4096).unwrap();
    assert_eq!(code(&store.register_buffer_ptr(p, 4096)), -3005);
    // SAFETY: offsets stay inside `buf`.
    let (mid, upper) = unsafe {
        (
            p.cast::<u8>().add(100).cast(),
            p.cast::<u8>().add(4096).cast(),
        )
    };
    assert_eq!(code(&store.register_buffer_ptr(mid, 10)), -3000);
    assert_eq!(code(&store.register_buffer_ptr(p, 8192)), -3000);
    store.register_buffer_ptr(upper, 4096).unwrap();
    assert_eq!(store.inner().registered_bytes(), Ok(8192));

    assert_eq!(code(&store.unregister_buffer_ptr(ptr::null(), 4096)), -3000);
    assert_eq!(code(&store.unregister_buffer_ptr(p, 0)), -3000);
    assert_eq!(code(&store.unregister_buffer_ptr(p, 100)), -3000);
    store.unregister_buffer_ptr(p, 4096).unwrap();
    store.unregister_buffer_ptr(upper, 4096).unwrap();
    assert_eq!(store.inner().registered_bytes(), Ok(0));
    assert_eq!(code(&store.unregister_buffer_ptr(p, 4096)), -3000);
}
