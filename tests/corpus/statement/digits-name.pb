
‰Š¦action¨register«description³a corpus base model§licenceªapache-2.0¯manifest_sha256Ä 2×wâÄÁ°ûæb,hb”*Œ¨‘Üîc‡©sï¤name¥12345¦reason ¬release_dateª2023-11-01©signed_atÎeSÔà­vendor_key_idÙ@43f31da90603c9ff290dfb6d1bd17851a448f4f43ef6d6311d928321e9bc5bc9§version@OnÇ–ïVEm¥A£V€®Äi5Z]ôÃ
_{,úsæZç¸’ €è‡åA~æ[\ªª‚ö¨¶ Šy‡ês+}Î9£ôÂ÷*ª(Ğo¶aÖ§£l}