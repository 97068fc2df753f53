-- Open311's address_string names a shop by its address or its English name as well as by its name
-- (routes/open311_place.py): equality lookups that stay index lookups at a million shops (the name
-- alone, and a name with its address, are served by shop_name_address_idx).
CREATE INDEX shop_address_idx ON shop (address);
CREATE INDEX shop_name_en_lower_idx ON shop (lower(name_en));
