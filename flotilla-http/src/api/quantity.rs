//! Kubernetes resource quantities (`500m`, `2`, `128Mi`, `1G`) as flotilla's
//! units: CPU in millicores, memory in MiB (rounded up).

/// CPU in millicores: `500m` → 500, `2` → 2000, `0.5` → 500.
pub(crate) fn cpu_millicores(q: &str) -> Result<i64, String> {
    let q = q.trim();
    let (number, milli) = match q.strip_suffix('m') {
        Some(n) => (n, true),
        None => (q, false),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
        .ok_or_else(|| format!("'{q}' is not a CPU quantity like '500m' or '2'"))?;
    let m = if milli { value } else { value * 1000.0 };
    if m > 1e9 {
        return Err(format!("'{q}' is more CPU than any machine has"));
    }
    Ok((m.ceil() as i64).max(1))
}

/// Memory in MiB, rounded up: `128Mi` → 128, `1Gi` → 1024, `1G` → 954,
/// `1048576` (bytes) → 1.
pub(crate) fn memory_mib(q: &str) -> Result<i64, String> {
    let q = q.trim();
    const UNITS: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Ei", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = UNITS
        .iter()
        .find_map(|(suffix, f)| q.strip_suffix(suffix).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
        .ok_or_else(|| format!("'{q}' is not a memory quantity like '128Mi' or '1G'"))?;
    let mib = value * factor / (1024.0 * 1024.0);
    if mib > 1e12 {
        return Err(format!("'{q}' is more memory than any machine has"));
    }
    Ok((mib.ceil() as i64).max(1))
}

/// The quantity string of `millicores`.
pub(crate) fn cpu_string(millicores: i64) -> String {
    if millicores % 1000 == 0 {
        (millicores / 1000).to_string()
    } else {
        format!("{millicores}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_quantities_become_millicores_and_mib() {
        assert_eq!(cpu_millicores("500m"), Ok(500));
        assert_eq!(cpu_millicores("2"), Ok(2000));
        assert_eq!(cpu_millicores("0.25"), Ok(250));
        assert_eq!(memory_mib("128Mi"), Ok(128));
        assert_eq!(memory_mib("1Gi"), Ok(1024));
        assert_eq!(memory_mib("1G"), Ok(954));
        assert_eq!(memory_mib("1048576"), Ok(1));
        assert_eq!(memory_mib("500k"), Ok(1));
        for bad in ["", "m", "-1", "abc", "1x", "NaN", "1e400"] {
            assert!(cpu_millicores(bad).is_err(), "cpu {bad:?}");
            assert!(memory_mib(bad).is_err(), "memory {bad:?}");
        }
        assert_eq!(cpu_string(500), "500m");
        assert_eq!(cpu_string(2000), "2");
    }
}
