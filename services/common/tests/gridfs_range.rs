//! `gridfs::read_range` against the real MongoDB-compatible server, on a
//! file of several GridFS chunks: ranges inside one chunk, across chunk
//! boundaries, and at both ends.

use futures::TryStreamExt;
use mongodb::bson::doc;

#[tokio::test]
async fn ranges_read_exactly_the_requested_bytes_across_chunks() {
    // Arrange: about 3.5 chunks of 255 KiB with a recognisable pattern.
    let client = mongodb::Client::with_uri_str(common::testing::mongodb_uri())
        .await
        .expect("client");
    let db_name = format!("range_{}", mongodb::bson::oid::ObjectId::new().to_hex());
    let db = client.database(&db_name);
    let bucket = common::gridfs::bucket(&db);
    let data: Vec<u8> = (0..(255 * 1024 * 3 + 123_457) as u32)
        .map(|i| (i % 251) as u8)
        .collect();
    let path = std::env::temp_dir().join(format!("{db_name}.bin"));
    std::fs::write(&path, &data).expect("write");
    let fid = common::gridfs::upload_file(&bucket, &path, "big.bin", doc! {})
        .await
        .expect("upload");
    let _ = std::fs::remove_file(&path);
    let (file, md5) = common::gridfs::find_with_md5(&db, fid)
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(file.length, data.len() as u64);
    assert_eq!(md5, None, "the driver writes no md5");
    let last = data.len() as u64 - 1;
    let chunk = 255 * 1024;

    for (start, end) in [
        (0, 0),
        (0, last),
        (10, 99),
        (chunk - 5, chunk + 5),
        (chunk, 2 * chunk - 1),
        (chunk / 2, 3 * chunk + 17),
        (last - 99, last),
        (last, last),
    ] {
        // Act
        let bytes: Vec<bytes::Bytes> = common::gridfs::read_range(&db, &file, start, end)
            .try_collect()
            .await
            .expect("read range");

        // Assert
        let got: Vec<u8> = bytes.concat();
        assert_eq!(
            got,
            data[start as usize..=end as usize],
            "range {start}-{end}"
        );
    }

    // A missing chunk is an error, never short data.
    db.collection::<mongodb::bson::Document>("fs.chunks")
        .delete_one(doc! { "files_id": fid, "n": 1 })
        .await
        .expect("remove a chunk");
    let broken: Result<Vec<bytes::Bytes>, _> = common::gridfs::read_range(&db, &file, 0, last)
        .try_collect()
        .await;
    assert!(broken.is_err(), "a hole in the file is reported");
    db.drop().await.expect("drop test database");
}
