"""Everything Amazon: the SP-API client, Amazon's official models and the usage plans read from them."""
