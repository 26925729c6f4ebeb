/* Start-up: stack pointer, .data copied from its load address (when a ROM holds the image), zeroed .bss,
   main(), then report main's return value through sys.sim_exit. */
    .section .text.start
    .global _start
_start:
    la      sp, __stack_top
    la      t0, __data_start
    la      t1, __data_end
    la      t2, __data_load
    beq     t0, t2, 2f
1:  bgeu    t0, t1, 2f
    lw      t3, 0(t2)
    sw      t3, 0(t0)
    addi    t0, t0, 4
    addi    t2, t2, 4
    j       1b
2:  la      t0, __bss_start
    la      t1, __bss_end
3:  bgeu    t0, t1, 4f
    sw      zero, 0(t0)
    addi    t0, t0, 4
    j       3b
4:  call    main
    call    insitu_exit
5:  j       5b
