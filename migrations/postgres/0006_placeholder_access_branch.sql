-- Placeholder on the access branch only: migration numbers 0005-0007 belong to other
-- branches; this keeps the access branch's 0008 contiguous until they are merged.
-- DROP THIS FILE AT MERGE.
SELECT 1;
