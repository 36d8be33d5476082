//! Dropping a table or a field column: the supported repair for a table written by mistake
//! and for a column whose type one bad write fixed.

use doppel_core::FieldValue;
use doppel_lake::{Lake, LakeError};

use crate::{batch, config, point, query};

/// One string written first fixes `speed` as a string column, and every float after it is
/// refused; dropping the column (persisted rows and rows still only in the buffer and WAL)
/// frees it: floats are then accepted, the other fields keep their values, and after a
/// restart nothing of the old column comes back.
#[test]
fn dropping_a_column_frees_its_type_for_the_writes_that_follow() {
    let dir = tempfile::tempdir().unwrap();
    {
        let lake = Lake::open(dir.path(), config()).unwrap();
        let bad = point(
            "pumps",
            "p1",
            &[
                ("speed", FieldValue::String("fast".into())),
                ("power", FieldValue::Float(4.0)),
            ],
            10,
        );
        lake.write_blocking(batch(vec![bad]), false).unwrap();
        lake.flush().unwrap();
        let late = point("pumps", "p2", &[("power", FieldValue::Float(5.0))], 20);
        lake.write_blocking(batch(vec![late]), false).unwrap();
        let float = || point("pumps", "p1", &[("speed", FieldValue::Float(0.7))], 30);
        let refused = lake
            .write_blocking(batch(vec![float()]), false)
            .unwrap_err();
        assert!(matches!(refused, LakeError::Rejected(_)), "{refused}");

        let before = lake.drop_effect("plant", "pumps", Some("speed")).unwrap();
        assert_eq!((before.files, before.rows), (1, 2));
        let done = lake
            .drop_table_or_column("plant", "pumps", Some("speed"))
            .unwrap();
        assert_eq!(done.values, Some(1));
        lake.write_blocking(batch(vec![float()]), false).unwrap();
        let text = query(&lake, "SELECT asset, power, speed FROM pumps ORDER BY time");
        assert!(text.contains("| p1    | 4.0   |       |"), "{text}");
        assert!(text.contains("| p2    | 5.0   |       |"), "{text}");
        assert!(text.contains("| p1    |       | 0.7   |"), "{text}");
    }
    let lake = Lake::open(dir.path(), config()).unwrap();
    let text = query(&lake, "SELECT count(*) AS n, count(speed) AS s FROM pumps");
    assert!(text.contains("| 3 | 1 |"), "{text}");
    assert_eq!(
        lake.catalog().table("plant", "pumps").unwrap().fields["speed"],
        doppel_core::FieldType::Float
    );
    assert!(lake.check().unwrap().is_empty());
}

/// A dropped table is gone, rows only in the WAL included (they do not come back at the next
/// open); the other tables keep everything; a write after the drop starts the table afresh.
/// Tags, unknown names and a table's last field are refused with what to do instead.
#[test]
fn a_dropped_table_stays_dropped_and_its_neighbours_keep_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    {
        let lake = Lake::open(dir.path(), config()).unwrap();
        let speed = |m: &str, v: f64, t: i64| point(m, "p1", &[("speed", FieldValue::Float(v))], t);
        lake.write_blocking(
            batch(vec![speed("mistake", 1.0, 1), speed("pumps", 2.0, 1)]),
            false,
        )
        .unwrap();
        lake.flush().unwrap();
        lake.write_blocking(
            batch(vec![speed("mistake", 3.0, 2), speed("pumps", 4.0, 2)]),
            false,
        )
        .unwrap();

        for (column, says) in [
            (Some("asset"), "is a tag"),
            (Some("nope"), "has no field `nope`; its fields: speed"),
            (Some("speed"), "only field"),
        ] {
            let e = lake.drop_effect("plant", "mistake", column).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
        let e = lake
            .drop_table_or_column("plant", "nothing", None)
            .unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");

        let done = lake.drop_table_or_column("plant", "mistake", None).unwrap();
        assert_eq!(done.rows, 2);
        // Not shut down: anything of `mistake` left in the WAL would replay at the next open.
    }
    let lake = Lake::open(dir.path(), config()).unwrap();
    assert!(lake.catalog().table("plant", "mistake").is_none());
    assert!(query(&lake, "SELECT count(*) AS n FROM pumps").contains("| 2 |"));
    let fresh = point("mistake", "p9", &[("level", FieldValue::Integer(3))], 5);
    lake.write_blocking(batch(vec![fresh]), false).unwrap();
    let text = query(&lake, "SELECT * FROM mistake");
    assert!(text.contains("p9") && !text.contains("speed"), "{text}");
}
