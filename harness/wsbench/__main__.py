from wsbench.cli import main

main()
