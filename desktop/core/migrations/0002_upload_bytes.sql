-- What the upload really sent: the audio alone is a fraction of the video.
ALTER TABLE items ADD COLUMN upload_bytes INTEGER;
