-- Matching a source's record to a shop by its exact name and address, for sources that give
-- nothing better (a news item, a business without USCC).
CREATE INDEX shop_name_address_idx ON shop (name, address);
