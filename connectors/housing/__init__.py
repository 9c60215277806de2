"""Housing (住房): provident-fund accounts and deposits, signed deposit certificates, public-rental applications."""
