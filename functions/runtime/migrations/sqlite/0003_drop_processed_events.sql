-- notify keys its webhook queue by event id, so no code records processed
-- events any more.
DROP TABLE processed_events;
