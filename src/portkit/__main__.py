from portkit.cli.main import main

main()
