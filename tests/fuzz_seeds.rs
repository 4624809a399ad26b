//! Replays every committed fuzz seed (`fuzz/seeds/<target>/*`) through the
//! same code the libFuzzer targets run (`fuzz/harness.rs`), without
//! libFuzzer: CI checks that the seed corpus keeps passing. A crash a
//! fuzzer found, once fixed, is added to `fuzz/seeds/<target>/` and is
//! replayed here from then on. See `fuzz/README.md`.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::fs;
use std::path::Path;

#[test]
fn every_seed_of_every_target_passes() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut folders: Vec<String> = fs::read_dir(&seeds)
        .unwrap_or_else(|e| panic!("{}: {e}", seeds.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut targets: Vec<&str> = harness::TARGETS.iter().map(|(name, _)| *name).collect();
    targets.sort();
    assert_eq!(folders, targets, "fuzz/seeds/ must hold one folder per fuzz target");
    for (name, run) in harness::TARGETS {
        let dir = seeds.join(name);
        let mut files: Vec<_> = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|e| e.unwrap().path()).collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no seeds", dir.display());
        for f in &files {
            let data = fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            eprintln!("{name}: {}", f.display());
            run(&data);
        }
        eprintln!("{name}: {} seeds", files.len());
    }
}
