from merchant_code.cli import main

main()
