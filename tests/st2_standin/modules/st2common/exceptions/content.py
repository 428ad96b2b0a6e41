class ParseException(ValueError):
    pass
