from crm.cli import main

raise SystemExit(main(["run", "deals", *__import__("sys").argv[1:]]))
