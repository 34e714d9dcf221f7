from portkit.cli.entry import main

main()
