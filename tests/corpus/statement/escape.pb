
‰Š¦action¨register«description­fine[2Jmodel§licenceªapache-2.0¯manifest_sha256Ä 2×wâÄÁ°ûæb,hb”*Œ¨‘Üîc‡©sï¤name«corpus-base¦reason ¬release_dateª2023-11-01©signed_atÎeSÔà­vendor_key_idÙ@43f31da90603c9ff290dfb6d1bd17851a448f4f43ef6d6311d928321e9bc5bc9§version@Ú–¡ç‹²Õnò³{³
Ck@É–¶	¥£Åé“ÔËN?­E-Áh¾^hjìºAf²=Ö¦›#oó‹HŒişñ Šy‡ês+}Î9£ôÂ÷*ª(Ğo¶aÖ§£l}