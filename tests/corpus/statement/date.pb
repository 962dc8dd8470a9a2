
Š¦action¨register«description³a corpus base model§licenceªapache-2.0¯manifest_sha256Ä 2×wâÄÁ°ûæb,hb”*Œ¨‘Üîc‡©sï¤name«corpus-base¦reason ¬release_dateª2024-02-30©signed_atÎeSÔà­vendor_key_idÙ@43f31da90603c9ff290dfb6d1bd17851a448f4f43ef6d6311d928321e9bc5bc9§version@Á—â³Õ‰"#+Aı|’¼’¨3(5ò.	^jËù‡Uİ7Ñ
<¥ıNZ¸DÅ‡Õ¥ä²RïUÙm¥¶}ÒD Šy‡ês+}Î9£ôÂ÷*ª(Ğo¶aÖ§£l}