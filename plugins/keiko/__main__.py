from keiko.cli import entry

entry()
